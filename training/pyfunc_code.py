"""The MLflow "models from code" entry of the classifier: MLflow runs this file to build the
model object at load time, so no pickled wrapper is stored or unpickled (anyone who can
write a pickle into an artifact store would otherwise run code on every scoring worker).
Only MLflow loads this file; nothing imports it."""

from mlflow.models import set_model

from training.pyfunc import FusionPyfuncModel

set_model(FusionPyfuncModel())
