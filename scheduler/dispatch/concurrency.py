"""How many SendMessageBatch calls a publisher has in flight: enough to cover SQS's round
trip, and no more than keep one CPU busy.

A process runs its Python on one CPU at a time (the GIL). Against SQS a call mostly
waits for the network, and calls in flight side by side cover that wait. Against an
endpoint that answers at once they only take turns at the GIL, and the turns cost CPU
(``bench.dispatcher`` measured a third more per job with ten threads than with one).
So each publish sets the next one's concurrency from how busy its sends kept the
process: by Little's law, ``in_flight / busy`` calls keep one CPU fully busy.
"""

import math
from dataclasses import dataclass

#: The share of a publish's time its sends aim to keep the process's CPU busy: the rest
#: is room for the network's jitter.
TARGET_BUSY = 0.75
#: Sends busier than this were waiting for the GIL, not for SQS: what they could do with
#: fewer calls in flight is unknown, so the next publish halves them.
SATURATED = 0.9


@dataclass
class SendConcurrency:
    """The number of calls the next publish has in flight, between 1 and ``limit``.

    It starts at ``limit``, right for a distant SQS, and follows what each publish shows.
    """

    limit: int

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, not {self.limit}")
        self.current = self.limit

    def observe(self, *, in_flight: int, wall: float, cpu: float) -> None:
        """Set the next concurrency from sends that had ``in_flight`` calls at once and
        took ``wall`` seconds, in which the process spent ``cpu`` seconds of CPU."""
        if wall <= 0:
            return
        busy = cpu / wall
        if busy >= SATURATED:
            wanted = in_flight // 2
        elif busy <= 0:
            wanted = self.limit
        else:
            # Never fewer while the CPU has room: a batch's calls would take a round
            # trip more, and its row locks would be held that much longer.
            wanted = max(self.current, math.ceil(in_flight * TARGET_BUSY / busy))
        self.current = min(self.limit, max(1, wanted))

    def threads_for(self, calls: int) -> int:
        """How many threads send ``calls`` calls: as few as take the same number of
        rounds as :attr:`current` threads would."""
        if calls < 1:
            raise ValueError(f"calls must be at least 1, not {calls}")
        rounds = math.ceil(calls / min(self.current, calls))
        return math.ceil(calls / rounds)
