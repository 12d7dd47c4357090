"""The model definition MLflow executes when loading an informerflow model (models from code)."""

from mlflow.models import set_model

from informerflow.pyfunc import InformerPyfunc

set_model(InformerPyfunc())
