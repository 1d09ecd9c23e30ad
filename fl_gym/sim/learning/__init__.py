"""The learning side of federated learning: data, batched models, local training, update
compression, aggregation rules and the federation's state.

Nothing here knows about radio: the round pipeline (:mod:`fl_gym.sim.rounds`) composes learning
with a transport, and a :class:`~fl_gym.sim.learning.federation.Federation` holds its cell only
as an object it is handed.
"""
