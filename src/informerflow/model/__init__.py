"""The Informer forecasting model (Zhou et al., AAAI 2021) and its builder."""

from informerflow.model.informer import Informer, InformerStack, build_model, check_model_config

__all__ = ["Informer", "InformerStack", "build_model", "check_model_config"]
