"""Models built on din_ops: the paper's lightweight DIN style-transfer network and the VGG-19
encoder used for its losses (and, as in the paper, for its style side)."""
from .din_style_net import DINStyleNet, MobileEncoder, MobileDecoder
from .vgg import VGG19Encoder, load_vgg19_state_dict

__all__ = ["DINStyleNet", "MobileDecoder", "MobileEncoder", "VGG19Encoder", "load_vgg19_state_dict"]
