"""The reward-hacking lab: Best-of-N and RL against a gold reward model (000 Sec. 3, Sec. 5.3).

- :mod:`smorm.rlhf.generate`: sample N responses per prompt into a resumable pool file.
- :mod:`smorm.rlhf.prompts`: in-distribution (held out from a proxy's D_S) and file prompt sets.
- :mod:`smorm.rlhf.scorers`: load proxies and the gold (smorm or Hugging Face), score pools.
- :mod:`smorm.rlhf.bon`: the unbiased order-statistics Best-of-N estimator and KL_BoN.
- :mod:`smorm.rlhf.lab`: ``smorm bon`` end to end; :mod:`smorm.rlhf.rl`: ``smorm rl`` (RLOO via TRL).
- :mod:`smorm.rlhf.plots`: CSV tables and PNG figures; :mod:`smorm.rlhf.settings`: typed options.
- :mod:`smorm.rlhf.relabel`: ``smorm relabel``, gold labels (pairs, margins, noise, ratings) for a data set.

Nothing is imported here, so ``import smorm.rlhf`` is free.
"""
