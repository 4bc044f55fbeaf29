"""Config schema, YAML loading, dotted overrides and the resolved config that a run saves.

Every key has a default, so the smallest config is `data: {source: digits}`. Validation is done
by pydantic (extra keys forbidden); its errors are turned into one line with a did-you-mean.
The plugins a config names (`imports:`) are imported before it is validated (imbal.plugins).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from imbal import input_checks, plugins
from imbal.errors import UserError
from imbal.overrides import apply_override, deep_merge, kinds_first
from imbal.registry import did_you_mean


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _strict_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        """epochs: true or "2" is refused, not taken as 1 or 2 (input_checks.strict_number)."""
        return input_checks.strict_number(cls.model_fields[info.field_name].annotation, v)


class Subset(Section):
    per_class: int | None = Field(None, ge=1, description="keep at most this many training images per class (before imbalance)")
    total: int | None = Field(None, ge=1, description="keep this many training images in all, stratified")
    test_per_class: int | None = Field(None, ge=1, description="keep at most this many test images per class")


class Imbalance(Section):
    kind: str = Field("none", description="none | step | longtail | explicit | random")
    classes: list[int] | None = Field(None, description="step: classes reduced (default 0-4)")
    keep: float | None = Field(None, description="step: fraction of those classes kept (default 0.1)")
    ratio: float | None = Field(None, description="longtail, step: n_max / n_min (step: the last half of the classes reduced; not with classes/keep)")
    order: list[int] | None = Field(None, description="longtail: class order, head first")
    n_max: int | None = Field(None, description="longtail: head class size (default: smallest class)")
    counts: list[int] | None = Field(None, description="explicit: per-class counts")
    low: int | None = Field(None, description="random: fewest images a class keeps (count uniform on low..high, data seed)")
    high: int | None = Field(None, description="random: most images a class keeps (at most the smallest class)")
    apply: Literal["once", "per_batch"] = Field(
        "once", description="once: to the data set; per_batch: S3's masking inside the loop, on "
        "purpose (step keep 1/k: a batch keeps the step's classes when batch_id % k == 0; warned)")

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"kind", "apply"}, exclude_none=True)


class Augment(Section):
    crop_padding: int = Field(0, ge=0, le=1024, description="random crop after padding by this many black pixels (black before normalisation, as the long-tail codebases; 0 = off)")
    hflip: bool = Field(False, description="random horizontal flip")


class Data(Section):
    source: str = Field("digits", description="digits | mnist | fashion_mnist | kmnist | cifar10 | cifar100 | svhn | imagefolder")
    root: str | None = Field(None, description="data directory (default $IMBAL_DATA, else ./data)")
    download: bool = Field(False, description="let torchvision download missing files")
    image_size: int | None = Field(None, ge=4, le=4096, description="resize images to this square size (null: the source's own size)")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="held-out validation split, stratified (val_from: kept)")
    val_from: Literal["kept", "removed"] = Field(
        "kept", description="kept: val_fraction of the imbalanced set; removed: val_per_class "
        "images per class from those the imbalance removed (a class short of them gives its kept ones)")
    val_per_class: int | None = Field(None, ge=1, description="val_from: removed: validation images per class")
    labelled_per_class: int | None = Field(None, ge=1, description="keep labels for this many training images per class (drawn with the data seed after the imbalance and the validation split); the others are the stream `unlabelled: rest` (README: Labelled subsets)")
    subset: Subset = Field(default_factory=Subset)
    imbalance: Imbalance = Field(default_factory=Imbalance)
    augment: Augment = Field(default_factory=Augment)


class Model(Section):
    backbone: str = Field("lenet", description="a name from the backbone registry")
    params: Finite = Field(default_factory=dict, description="backbone options, e.g. {activation: relu}")
    init: str = Field("default", description="default (each backbone's own) | xavier_uniform | xavier_normal | kaiming_normal (biases zero), or a plugin's: applied once the model is built; model.init_from's weights then replace the backbone's")
    init_from: str | None = Field(None, description="run directory or checkpoint to start the backbone from")
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the head for this many epochs")
    pretrained: str | None = Field(None, description="torchvision/ and timm/ backbones: imagenet (weights from the local cache) or a weights file, see README")
    image_size: int | None = Field(None, ge=8, description="torchvision/ and timm/ backbones: resize batches to this size on the device (null: the pretrained weights' size, else none)")


# A passed-through value (an optimizer's or a plugin schedule's argument) without NaN or inf
# anywhere in it; its type is checked against the builder's signature later.
PassedThrough = dict[str, Annotated[Any, AfterValidator(input_checks.finite)]]
# Free-form parameter maps and remedy items: anything, but no NaN or infinity inside.
Finite = Annotated[dict[str, Any], AfterValidator(input_checks.finite)]
FiniteItem = Annotated[Any, AfterValidator(input_checks.finite)]
# Bounds that keep a typo from allocating terabytes or overflowing a C integer.
MAX_BATCH, MAX_SEED = 1 << 20, (1 << 63) - 1


class Optimizer(Section):
    """name, lr and the optimizer's own keyword arguments (any other key), which
    imbal.training.optim checks against the optimizer's signature and fills in."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: PassedThrough = Field(init=False)
    name: str = Field("sgd", description="torch.optim's sgd, adam, adamw, rmsprop, ... (or SGD, AdamW, ...), or a plugin's; other keys: its keyword arguments (README: Optimizers and schedules)")
    lr: float = Field(0.01, gt=0, allow_inf_nan=False, description="base learning rate")


class Schedule(Section):
    """A plugin's schedule may take keys of its own (any other key)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: PassedThrough = Field(init=False)
    name: str = Field("none", description="none | cosine | multistep, or a plugin's")
    t_max: int | None = Field(None, ge=1, description="cosine: the lr reaches 0 at this epoch (default: the run's epochs)")
    milestones: list[int] = Field(default_factory=list, description="multistep: epochs where lr *= gamma")
    gamma: float = Field(0.1, gt=0, allow_inf_nan=False, description="multistep: lr factor at each milestone")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up: lr x (e+1)/warmup_epochs in epoch e < warmup_epochs")


class Ema(Section):
    decay: float = Field(0.999, gt=0, lt=1, description="weight of the old average at each step: ema = decay*ema + (1-decay)*weights")


class Train(Section):
    epochs: int = Field(10, ge=1, description="training epochs")
    batch_size: int = Field(128, ge=1, le=MAX_BATCH, description="training batch size")
    optimizer: Optimizer = Field(default_factory=Optimizer)
    schedule: Schedule = Field(default_factory=Schedule)
    grad_clip: float | None = Field(None, gt=0, description="clip gradient norm to this value")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    amp: Literal["auto", "off", "float16", "bfloat16"] = Field(
        "auto", description="auto: float16 on CUDA, off on CPU")
    channels_last: Literal["auto", True, False] = Field(
        "auto", description="channels_last memory format; auto: on for the CPU (faster there)")
    compile: bool = Field(False, description="torch.compile the model (CUDA)")
    threads: int | None = Field(None, ge=1, le=4096, description="CPU threads (default: torch's choice)")
    deterministic: bool = Field(True, description="torch deterministic algorithms")
    batch_transforms: list[Any] = Field(
        default_factory=list, description="per-batch transforms after augmentation (may give soft targets), see README")
    ema: Ema | None = Field(None, description="moving average of the weights, updated every step and used for evaluation, best.pt and results (README: Moving average of the weights)")

    @field_validator("batch_transforms", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _as_list(v)


class Eval(Section):
    batch_size: int = Field(1024, ge=1, le=MAX_BATCH, description="evaluation batch size")
    select: Literal["balanced_acc", "top1"] = Field(
        "balanced_acc", description="validation metric that picks best.pt")
    minority_classes: list[int] | None = Field(None, description="default: from the imbalance")
    many_shot: int = Field(100, ge=1, description="classes with more training images are 'many'")
    few_shot: int = Field(20, ge=1, description="classes with fewer training images are 'few'")
    test_every: int | None = Field(
        None, ge=1, description="test every N supervised epochs for the logs; null: only best.pt and "
        "the last epoch (results.json), metrics.jsonl's test is null in the other epochs")
    embed: bool = Field(False, description="after training, t-SNE of best.pt's test features into RUN/embed (as imbal embed)")


class Logging(Section):
    out_dir: str = Field("runs", description="parent of run directories")
    tensorboard: bool = Field(True, description="write TensorBoard logs to RUN/tb")
    progress: bool = Field(True, description="tqdm progress bar")
    log_every: int = Field(50, ge=1, description="steps between progress-bar loss updates")


class Seeds(Section):
    data: int = Field(0, ge=-MAX_SEED, le=MAX_SEED, description="which images are kept, the validation split")
    train: int = Field(0, ge=-MAX_SEED, le=MAX_SEED, description="model init, batch order, augmentation")


class Pretrain(Section):
    task: str = Field(description="rotation | jigsaw")
    epochs: int = Field(5, ge=1, description="pretext-task epochs")
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH, description="default: train.batch_size")
    optimizer: Optimizer = Field(default_factory=lambda: Optimizer(name="adam", lr=1e-3))
    params: Finite = Field(default_factory=dict, description="task options")
    use_removed: bool = Field(False, description="also use the images the imbalance removed, unlabelled")


class Stage(Section):
    """One stage of a run (see README "Stages"); unset keys take the main config's values."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="unique name: metrics rows, TensorBoard tags")
    task: str | None = Field(None, description="pretext task (rotation | jigsaw); null: supervised on the labels")
    params: Finite = Field(default_factory=dict, description="pretext task options")
    semi: Finite | None = Field(
        None, description="semi-supervised method and its options, e.g. {name: mixmatch, k: 2}; needs unlabelled (README: MixMatch)")
    epochs: int | None = Field(None, ge=1, description="default: train.epochs")
    trains: Literal["all", "head", "scales"] = Field(
        "all", description="all; head: the backbone frozen, BatchNorm statistics included; "
        "scales: learnable weight scaling (LWS), only a per-class scale of the frozen head's logits")
    max_norm: float | None = Field(
        None, gt=0, description="MaxNorm: after every step, classifier rows longer than this are "
        "scaled back to it (weight balancing); null: off")
    reinit_head: bool = Field(False, description="re-initialise the classifier head when the stage starts")
    freeze_backbone_epochs: int = Field(0, ge=0, description="train only the head for the stage's first N epochs")
    remedy: list[FiniteItem] | None = Field(None, description="default: the config's remedy")
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH, description="default: train.batch_size")
    optimizer: Literal["continue"] | dict[str, Any] | None = Field(
        None, description="keys over train.optimizer; continue: keep the previous stage's optimizer and schedule")
    schedule: dict[str, Any] | None = Field(
        None, description="keys over train.schedule; spans this stage and the stages continuing it")
    batch_transforms: list[Any] | None = Field(None, description="default: train.batch_transforms")
    unlabelled: Literal["removed", "rest"] | None = Field(
        None, description="a second, unlabelled stream: removed, the images the imbalance removed; rest, the training images without labels (data.labelled_per_class)")
    unlabelled_batch_size: int | None = Field(
        None, ge=1, description="unlabelled images per step; null: each once an epoch, spread over the steps")

    @field_validator("remedy", "batch_transforms", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return v if v is None else _as_list(v)


class Config(Section):
    imports: list[str] = Field(default_factory=list, description="plugins imported before the "
                               "config is checked: module names or .py files (relative to the "
                               "config file; saved as absolute paths)")
    name: Annotated[str, AfterValidator(input_checks.one_path_component)] = Field(
        "run", description="run name, the run directory under logging.out_dir")
    data: Data = Field(default_factory=Data)
    model: Model = Field(default_factory=Model)
    remedy: list[FiniteItem] = Field(default_factory=list, description="list of remedies, see README")
    pretrain: Pretrain | None = None
    stages: list[Stage] | None = Field(None, description="the run as a list of stages, see README (default: pretrain?, train)")
    train: Train = Field(default_factory=Train)
    eval: Eval = Field(default_factory=Eval)
    logging: Logging = Field(default_factory=Logging)
    seeds: Seeds = Field(default_factory=Seeds)

    @field_validator("imports", "remedy", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _as_list(v)


def _as_list(v: Any) -> Any:
    """null -> [], a single item -> [item] (remedy: focal)."""
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _section_model(ann: Any) -> type[BaseModel] | None:
    """The section model inside an annotation: X, X | None, list[X] | None."""
    for cand in getattr(ann, "__args__", (ann,)):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
        inner = _section_model(cand) if getattr(cand, "__args__", None) else None
        if inner is not None:
            return inner
    return None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys of the section that `loc` points into (for did-you-mean)."""
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of sections (stages)
            continue
        field = model.model_fields.get(str(part))
        found = None if field is None else _section_model(field.annotation)
        if found is None:
            return []
        model = found
    return list(model.model_fields)


def _key(loc: tuple) -> str:
    """("stages", 1, "epochs") -> "stages[1].epochs"."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    e = err.errors()[0]
    key = prefix + _key(e["loc"])
    if e["type"] == "extra_forbidden":
        leaf = str(e["loc"][-1])
        return f"unknown key '{key}'{did_you_mean(leaf, _fields_at(model, e['loc']))}"
    if e["type"] == "missing":
        return f"missing key '{key}'"
    got = e.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"bad value for '{key}': {e['msg'].lower()}{got_s}"


def validate(raw: dict[str, Any]) -> Config:
    if not isinstance(raw, dict):
        raise UserError("config must be a YAML mapping of sections (data, model, train, ...)")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise UserError(format_validation_error(err, Config)) from None
    if (cfg.data.val_from == "removed") != (cfg.data.val_per_class is not None):
        raise UserError("data.val_from: removed takes its validation images per class from "
                        "data.val_per_class: give both or neither")
    if cfg.stages is not None:
        fill_stages(cfg)
    return cfg


def _merged(model: type[Section], base: Section, over: dict[str, Any], where: str) -> dict[str, Any]:
    """A stage's partial section laid over the main config's one, validated. A stage that names
    another optimizer or schedule starts from that one's defaults: the main section's arguments
    belong to its own kind (momentum means nothing to adam)."""
    start = base.model_dump(mode="json")
    if over.get("name", start["name"]) != start["name"]:
        start = {}
    try:
        return model.model_validate(deep_merge(start, over)).model_dump(mode="json")
    except ValidationError as err:
        raise UserError(format_validation_error(err, model, prefix=where + ".")) from None


def fill_stages(cfg: Config) -> None:
    """Give every stage its defaults from the main config (train section, remedy), so the saved
    config says exactly what each stage ran with; refuse what stages cannot mean."""
    if not cfg.stages:
        raise UserError("stages: give at least one stage, or leave stages out")
    if cfg.pretrain is not None:
        raise UserError("pretrain and stages are both set: put the pretext stage in stages "
                        "(e.g. {name: pretrain, task: rotation})")
    if cfg.model.freeze_backbone_epochs:
        raise UserError("model.freeze_backbone_epochs is for runs without stages; with stages, "
                        "give a stage freeze_backbone_epochs or trains: head")
    names = [s.name for s in cfg.stages]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"stages: the name '{twice[0]}' is used twice; stage names must differ")
    tr = cfg.train
    for i, st in enumerate(cfg.stages):
        at = f"stages[{i}]"
        st.epochs = st.epochs or tr.epochs
        st.batch_size = st.batch_size or tr.batch_size
        if st.optimizer == "continue":
            if st.schedule is not None:
                raise UserError(f"{at} ({st.name}): optimizer: continue keeps the previous "
                                f"stage's schedule too; drop its schedule")
        else:
            st.optimizer = _merged(Optimizer, tr.optimizer, st.optimizer or {}, f"{at}.optimizer")
            st.schedule = _merged(Schedule, tr.schedule, st.schedule or {}, f"{at}.schedule")
        if st.task is None and st.semi is None:
            st.remedy = list(cfg.remedy) if st.remedy is None else st.remedy
            st.batch_transforms = (list(tr.batch_transforms) if st.batch_transforms is None
                                   else st.batch_transforms)


def read_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"cannot read config {p}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"config {p} is not UTF-8 text (byte {err.start}); is it a YAML file?") from None
    if not text.strip():
        raise UserError(f"config {p} is empty; give at least data: {{source: ...}}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(f"YAML syntax error in {p}{where}: {problem}") from None
    input_checks.check_expanded_size(data, f"config {p}")
    if data is None:
        raise UserError(f"config {p} holds only comments; give at least data: {{source: ...}}")
    return data


def read_config_file(path: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file; `extends: other.yaml` (relative to the file) deep-merges it onto another.

    `imports:` paths are made absolute against the file that names them, and an extending
    file's imports add to its parent's (the parent's components still need their plugins)."""
    p = Path(path).resolve()
    if p in seen:
        raise UserError(f"config {path}: 'extends' loops back to itself")
    raw = read_yaml(p)
    if not isinstance(raw, dict):
        raise UserError(f"config {path} must be a YAML mapping of sections")
    return _expand(raw, p.parent, (*seen, p), f"config {path}")


def _expand(raw: dict[str, Any], base: Path, seen: tuple[Path, ...], what: str) -> dict[str, Any]:
    """`extends` and `imports` of one config mapping whose relative paths start at `base`."""
    if "imports" in raw:
        raw["imports"] = plugins.absolute(plugins.check_specs(raw["imports"]), base)
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise UserError(f"{what}: 'extends' must be a file name")
    inherited = read_config_file(base / parent, seen)
    merged = deep_merge(inherited, raw)
    if "imports" in merged:
        merged["imports"] = plugins.merge(inherited.get("imports"), raw.get("imports"))
    return merged


def load_config(source: str | Path | dict[str, Any] | None,
                overrides: list[str] | tuple[str, ...] = (),
                imports: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """YAML file, a config mapping (paths relative to the working directory) or nothing, plus
    dotted overrides and extra plugins -> validated, resolved config as a plain dict."""
    if isinstance(source, dict):
        raw = _expand(copy.deepcopy(source), Path.cwd(), (), "config")
    else:
        raw = read_config_file(source) if source is not None else {}
    for item in kinds_first(overrides):
        apply_override(raw, item)
    if imports:
        raw["imports"] = plugins.merge(plugins.check_specs(raw.get("imports")),
                                       plugins.absolute(plugins.check_specs(list(imports), "--import")))
    return resolve(raw)


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Import the config's plugins (relative paths from the working directory), then validate:
    a plugin's component names are known by the time anything checks them."""
    if not isinstance(raw, dict):
        validate(raw)  # the one-line refusal of a config that is not a mapping
    raw = {**raw, "imports": plugins.absolute(plugins.check_specs(raw.get("imports")))}
    plugins.load(raw["imports"])
    return validate(raw).model_dump(mode="json")


def dump_yaml(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)
