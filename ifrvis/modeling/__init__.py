"""The model: backbone, multi-scale deformable pixel decoder, IFR or Mask2Former-VIS decoder."""

from ifrvis.modeling.meta_arch import VISModel, build_model, concat_features
from ifrvis.modeling.weights import LoadReport, load_weights

__all__ = ["LoadReport", "VISModel", "build_model", "concat_features", "load_weights"]
