"""ArmoRM-style gating on any trained reward model (paper 004, Sec. 3.2, Sec. 4, App. A).

The recipe, stage by stage (each stage reads the same cached features):

- :mod:`smorm.gating.features`: one forward pass per sequence gives the last-token feature of
  prompt ⊕ response and of the prompt alone (the gate's input); sharded safetensors, resumable.
- :mod:`smorm.gating.ridge`: stage 1, one ridge regression per attribute without intercept, missing
  labels masked, penalty chosen on a seeded 80/20 split; writes the model's ``multi`` head.
- :mod:`smorm.gating.debias`: verbosity debiasing, ``r_i' = r_i - λ_i r_verbosity`` with λ_i solving
  Spearman(r_i', r_verbosity) = 0 on a reference set (004 Eq. 2-3).
- :mod:`smorm.gating.head`: the gate, a ReLU MLP on the prompt feature, softmax over the attributes,
  learnable scale β (init 100); stored as the model's ``gate`` head (mode G). The class lives in
  :mod:`smorm.models.heads` beside the other heads, registered as head kind ``gate``.
- :mod:`smorm.gating.train_gate`: BT training of the gate on cached features (backbone and regression
  head frozen; AdamW, cosine schedule).
- :mod:`smorm.gating.pipeline`: everything above for a run folder (``smorm gate``).

This package ``__init__`` imports nothing, so importing one stage does not pull in scikit-learn,
scipy or the data layer.
"""
