"""Self-supervised pretext stages (rotation, jigsaw) and the backbone hand-over.

    TASKS                       Registry("pretext task"): "rotation", "jigsaw"
    check_params(task, params)  refuse an unknown task or bad options (no data needed)
    run_pretrain(setup, ...)    the pretext stage of a run (imbal.training.loop calls it)
    load_backbone(model, src)   copy a pretrained backbone into a classifier (model.init_from)
"""

from imbal.pretext import jigsaw, rotation  # noqa: F401  (register the tasks)
from imbal.pretext.base import TASKS, PretextTask, build_task, check_params
from imbal.pretext.stage import run_pretrain
from imbal.pretext.transfer import load_backbone, save_pretrained

__all__ = ["TASKS", "PretextTask", "build_task", "check_params", "run_pretrain", "load_backbone",
           "save_pretrained"]
