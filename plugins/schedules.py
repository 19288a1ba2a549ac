"""Schedules for λ(t), the weight of the consistency loss."""

from dataclasses import dataclass

from testbed import Schedule, hookimpl


@dataclass(frozen=True)
class ConstantOptions:
    weight: float = 1.0  # λ; 0 turns the consistency term (and the unlabeled batch) off

    def __post_init__(self):
        if self.weight < 0:
            raise ValueError(f"schedule.weight must be 0 or more, got {self.weight}")


def constant(options: ConstantOptions, context):
    return lambda step: options.weight


@hookimpl
def testbed_schedules():
    return [Schedule(name="constant", summary="λ(t) = weight", factory=constant, options=ConstantOptions)]
