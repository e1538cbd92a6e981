"""Attention-head superposition: OV-incoherent skip trigrams learned by a 1-layer attention-only GPT with
standard heads and with a per-head output gate, and which head serves which task.

The toy follows Anthropic's attention-head superposition updates (2023) and the gated attention blocks of
Mathwin, Akar and Sharkey (2024). A skip trigram `[source] ... [destination] -> [output]` is learned by a
head that attends from the destination to the source and copies an output through its OV circuit. Here
every task has its own destination token, all tasks share the same source tokens, and the tasks'
source -> output maps are rows of a Latin rectangle: any two tasks send every source to different
outputs. So no single OV map serves two tasks, and a head's OV circuit, which sees only the source, cannot
tell the tasks apart: with fewer heads than tasks the model must combine heads per task (superposition)
or route with its attention (attend elsewhere, to a sink, for the tasks a head does not serve). A
per-head output gate sigmoid(x W_g) (`attn_gate: headwise`) can switch a head off per destination
token instead, which should let heads specialise; an L1 penalty on the gates pushes them to.

Which head serves which task is measured causally: zero one head's output before the output projection
and record how much each task's loss rises (`ablation_matrix`). A head serves a task when that rise
exceeds a threshold; the participation ratio of the rises gives a threshold-free count.

Everything runs on the project's `GPT` (`n_layer: 1`, `mlp: none`, no position encoding: a skip trigram
does not depend on where the source is).

A model's result depends on its seed alone within one numeric environment (`numerics`: torch build, CPU
kernel path, thread count), whatever ran before it in the process; across environments the rounding
differs, and training amplifies it.

The package splits it by role: `tasks` (the data), `settings` (`Study`, the arms), `train` (a model per arm
and seed, its analysis, the summary), `measure` (ablation and gates), `report` (Markdown and figures) and
`study` (the whole run). The command is `experiments/superposition/run.py`.
"""
