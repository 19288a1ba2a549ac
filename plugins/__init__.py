"""The built-in strategies, installed as ``testbed_plugins``.

Each module is a plugin registered through the ``testbed`` entry-point group in
pyproject.toml, exactly as a third-party plugin would be:

- seams: ``selectors``, ``teachers``, ``distances``, ``schedules`` (λ and TSA);
- views: ``augmentations`` (native word level), ``token_augmentations`` (tokenizer level),
  ``model_augmentations`` (masked-LM substitution, LLM paraphrase), ``nlpaug_augmentations``,
  ``precomputed`` (views stored in dataset columns), ``compositions`` (sequence, one_of,
  randaugment); ``_text`` holds helpers they share and registers nothing;
- data and models: ``datasets``, ``backbones``, ``frozen`` (a head on cached outputs of a frozen
  encoder); methods: ``presets``;
- grids: ``executors`` (serial, local processes, dask), ``trackers`` (MLflow, TensorBoard);
- reports: ``published`` (published results beside ours).
"""
