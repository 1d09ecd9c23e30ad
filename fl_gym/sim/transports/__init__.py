"""The transports of the round pipeline: how updates get from the devices to the server.

One module per transport, each a :class:`~fl_gym.sim.stages.Transport`:

* :mod:`~fl_gym.sim.transports.digital`: :class:`DigitalUplink`, compressed updates on the
  cell's orthogonal sub-channels (the pipeline's default);
* :mod:`~fl_gym.sim.transports.over_the_air`: :class:`OverTheAir`, analog aggregation with
  receive beamforming (Yang et al. 2020), the base of the other analog schemes;
* :mod:`~fl_gym.sim.transports.broadband`: :class:`BroadbandAnalog`, broadband analog
  aggregation over OFDM sub-carriers (Zhu et al. 2020);
* :mod:`~fl_gym.sim.transports.cs_over_the_air`: :class:`CSOverTheAir`, compressive-sensing
  over-the-air aggregation with error accumulation (Amiri and Gunduz 2020);

and :mod:`~fl_gym.sim.transports.downlink`: :func:`with_downlink`, the model broadcast the
pipeline adds to every transport's delivery. Transports import :mod:`fl_gym.sim.stages`,
:mod:`fl_gym.sim.radio` and :mod:`fl_gym.sim.learning`, never the pipeline
(:mod:`fl_gym.sim.rounds`), which imports them.
"""

from fl_gym.sim.transports.broadband import BroadbandAnalog
from fl_gym.sim.transports.cs_over_the_air import CSOverTheAir
from fl_gym.sim.transports.digital import DigitalUplink
from fl_gym.sim.transports.downlink import with_downlink
from fl_gym.sim.transports.over_the_air import OverTheAir

__all__ = ["BroadbandAnalog", "CSOverTheAir", "DigitalUplink", "OverTheAir", "with_downlink"]
