"""The radio side: channel formulas, the wireless cell (placement, fading, batteries, compute,
the batched digital uplink), and over-the-air analog aggregation.

Nothing here knows about learning: updates are tensors to carry, weights to combine.
"""
