"""A new modality in one folder: sets of 2-D points drawn by a flow model.

The example of docs/add_an_adapter.md. A prompt asks for a cloud of points somewhere
("8 points around (0.5, -1)"); the policy is a small MLP velocity field over [B, 8, 2]
point sets; the reward is how close the cloud's centre comes to that place. The
package touches nothing in alignflow: it declares its components with
``@component`` (or, once installed, the entry points of its pyproject.toml) and ships
its experiment in ``points/configs/``, which alignflow adds to the config search path
because the package declares components.

    PYTHONPATH=examples/points ALIGNFLOW_PLUGINS=points alignflow train experiment=points
"""

from points.policy import PointsPolicy, load_points_policy
from points.reward import GatherReward

__all__ = ["GatherReward", "PointsPolicy", "load_points_policy"]
