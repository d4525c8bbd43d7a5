"""LoadReport: what `load_weights` did, layer by layer, and the short name lists of its messages."""
import dataclasses

# How many names an error message or a log line lists before "...".
NAMES_SHOWN = 8


@dataclasses.dataclass
class LoadReport:
    """What `load_weights` did, layer by layer (names are layer names)."""

    path: str
    file_format: str  # "keras3" or "legacy"
    loaded: list = dataclasses.field(default_factory=list)
    excluded: list = dataclasses.field(default_factory=list)
    absent_from_file: list = dataclasses.field(default_factory=list)  # model layers the file lacks
    missing_in_model: list = dataclasses.field(default_factory=list)  # file layers the model lacks
    # (layer name, [file shapes], [model shapes]) for layers present on both sides that differ
    mismatched: list = dataclasses.field(default_factory=list)
    num_arrays: int = 0
    num_values: int = 0

    def summary(self):
        lines = [f"loaded {len(self.loaded)} layers ({self.num_arrays} arrays, "
                 f"{self.num_values:,} values) from {self.path} [{self.file_format}]"]
        if self.excluded:
            lines.append(f"excluded {len(self.excluded)}: {names_text(self.excluded)}")
        if self.mismatched:
            shown = "; ".join(f"{name}: file {shapes_text(f)} vs model {shapes_text(m)}"
                              for name, f, m in self.mismatched[:NAMES_SHOWN])
            more = " ..." if len(self.mismatched) > NAMES_SHOWN else ""
            lines.append(f"skipped {len(self.mismatched)} with other shapes: {shown}{more}")
        if self.absent_from_file:
            lines.append(f"absent from the file {len(self.absent_from_file)} (left as they were): "
                         f"{names_text(self.absent_from_file)}")
        if self.missing_in_model:
            lines.append(f"in the file but not in the model {len(self.missing_in_model)}: "
                         f"{names_text(self.missing_in_model)}")
        return "\n".join(lines)

    __str__ = summary


def names_text(names):
    """The first NAMES_SHOWN names, joined, with the count when there are more."""
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f", ... ({len(names)} in all)" if len(names) > NAMES_SHOWN else "")


def shapes_text(shapes):
    """[(3, 3, 8, 16), (16,)] as one short string."""
    return "[" + ", ".join(str(tuple(s)) for s in shapes) + "]"
