"""Teachers: who produces the probabilities on the weak view."""

from dataclasses import dataclass

import torch

from testbed import BaseTeacher, Teacher, hookimpl


@dataclass(frozen=True)
class SelfOptions:
    dropout: bool = True  # predict in train mode, as FixMatch and UDA do with their shared forward pass


class SelfTeacher(BaseTeacher):
    """The student itself, without gradient (FixMatch, UDA, pseudo-labelling)."""

    def __init__(self, options: SelfOptions, context, student):
        self.student, self.dropout = student, options.dropout

    @torch.no_grad()
    def probs(self, batch, stochastic=False):
        if self.dropout or stochastic:
            return self.student(**batch.inputs).logits.softmax(-1)
        self.student.eval()
        try:
            return self.student(**batch.inputs).logits.softmax(-1)
        finally:
            self.student.train()


@hookimpl
def testbed_teachers():
    return [Teacher(name="self", summary="the student itself, no gradient", factory=SelfTeacher, options=SelfOptions)]
