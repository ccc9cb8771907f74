"""structlab: structural learning in neural networks, as a library and a reproducible textbook.

The shared core lives at the top level (`reproducibility`, `training`, `metrics`, `results`,
`plotting`, `data`, `pipeline`); each subject of the book is a subpackage (`operators`,
`equivariance`, `neurogenesis`, ...) that builds on it.
"""

from structlab.numerics import apply_in_process as _apply_numerics
from structlab.reproducibility import get_device, seed_everything

_apply_numerics()  # portable numerics when the pipeline asked for them (structlab.numerics)

__all__ = ["get_device", "seed_everything", "__version__"]
__version__ = "0.1.0"
