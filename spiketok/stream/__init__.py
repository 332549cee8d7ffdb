"""Real-time streaming decoding: push spikes as they arrive, decode the behaviour at any time t.

`decoder.StreamingDecoder` is the decoder; `replay.replay` streams a recorded session through one
(the `spiketok replay` command) and `replay.plot_replay` draws the result.
"""

from .decoder import LateSpikeError, StreamingDecoder, StreamOrderError
from .replay import ReplayResult, behavior_at, plot_replay, replay

__all__ = [
    "StreamingDecoder",
    "StreamOrderError",
    "LateSpikeError",
    "ReplayResult",
    "replay",
    "behavior_at",
    "plot_replay",
]
