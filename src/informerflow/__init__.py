"""informerflow: Informer forecasting with its whole MLOps life on one machine or on Kubeflow."""

__version__ = "0.1.0"
