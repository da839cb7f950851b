"""Real-time separation (issue 15).

- :mod:`~bsmamba2.streaming.engine`: ``CausalStream``, a causal model as a stream at the model's rate
  (carried state: framing buffer, per-layer SSM state and conv tail, overlap-add tail);
- :mod:`~bsmamba2.streaming.plan`: ``FramePlan``, the engine's per-frame network step in few kernels (the
  model's ``step_spec`` function, with the weights laid out for one-frame steps), built from
  :mod:`~bsmamba2.streaming.frame_blocks` (each layer's time and band block) and
  :mod:`~bsmamba2.streaming.frame_heads` (band split, final norm, mask heads);
- :mod:`~bsmamba2.streaming.separator`: ``StreamingSeparator``, the Python API (any rate, mono or stereo,
  the residual stem, checked blocks);
- :mod:`~bsmamba2.streaming.blocks`: block mode for bidirectional models (short blocks with lookahead and
  crossfade);
- :mod:`~bsmamba2.cli.stream`: ``bsmamba2 stream``.
"""

from bsmamba2.streaming.engine import CausalStream
from bsmamba2.streaming.separator import StreamingSeparator

__all__ = ["CausalStream", "StreamingSeparator"]
