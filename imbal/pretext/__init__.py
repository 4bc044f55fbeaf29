"""Self-supervised pretext tasks (rotation, jigsaw) and the backbone hand-over.

Tasks only (targets + head): a pretext stage trains through the one Trainer step, with
imbal.pretext.stage.PretextObjective as its objective (imbal.training.stage_kinds builds it).

    TASKS                       Registry("pretext task"): "rotation", "jigsaw"
    check_params(task, params)  refuse an unknown task or bad options (no data needed)
    build_pretext(...)          a task as the Trainer's objective on a backbone
    load_backbone(model, src)   copy a pretrained backbone into a classifier (model.init_from)
"""

from imbal.pretext import jigsaw, rotation  # noqa: F401  (register the tasks)
from imbal.pretext.base import TASKS, PretextTask, build_task, check_params
from imbal.pretext.stage import PretextObjective, build_pretext
from imbal.pretext.transfer import load_backbone, save_pretrained

__all__ = ["TASKS", "PretextTask", "build_task", "check_params", "PretextObjective",
           "build_pretext", "load_backbone", "save_pretrained"]
