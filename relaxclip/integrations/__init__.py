"""Entry points that run relaxclip inside other libraries' trainers.

Nothing in the relaxclip core imports this package: each module here imports its host library
(open_clip's ``open_clip_train``, ...) itself, so the core stays installable without them.

* :mod:`relaxclip.integrations.open_clip_train` -- ``python -m relaxclip.integrations.open_clip_train``
  runs open_clip's own trainer with the relaxed loss and random sentence sampling.
"""
