"""The built-in strategies, installed as ``testbed_plugins``.

Each module is a plugin registered through the ``testbed`` entry-point group in
pyproject.toml, exactly as a third-party plugin would be, and imports only ``from testbed import
...`` (tests/test_public_api.py):

- seams: ``selectors``, ``teachers``, ``distances``, ``schedules`` (λ and TSA), ``regularisers``
  (batch-level loss terms: FreeMatch's fairness, entropy minimisation, joint masked-LM);
- views: ``augmentations`` (native word level), ``token_augmentations`` (tokenizer level),
  ``model_augmentations`` (masked-LM substitution, LLM paraphrase), ``nlpaug_augmentations``,
  ``precomputed`` (views stored in dataset columns), ``compositions`` (sequence, one_of,
  randaugment); ``_text`` (seeded randomness, option checks) and ``_resources`` (WordNet, the POS
  tagger, GloVe) hold helpers they share and register nothing;
- data and models: ``datasets``, ``tasks`` (sentence and token classification: what the rows
  choose), ``backbones``, ``frozen`` (a head on cached outputs of a frozen encoder); methods: ``presets``;
- grids: ``executors`` (serial, local processes, dask), ``trackers`` (MLflow, TensorBoard);
- reports: ``report_sections`` (the built-in sections: leaderboard, comparisons, ranks,
  ablation, dynamics, calibration, cost, provenance), ``published`` (published results beside ours).
"""
