"""Bridges from fl_gym controllers to FL frameworks.

* :mod:`fl_gym.integrations.flower`: a Flower strategy whose client selection is an fl_gym
  policy (a baseline or a trained agent), and the client-side properties it reads. Needs the
  ``flower`` extra (``pip install "fl-gym[flower]"``); importing this package does not import
  Flower.
"""
