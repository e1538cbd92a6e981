"""What is measured on a model: sink rates and attention statistics (`metrics`), the one probe evaluator
(`analysis`) and its typed result (`probe_result`), a checkpoint's probe as its run saw it
(`evaluation`), the loss rule every loss asks (`loss`), the costs of a sink (`sink_costs`, `streaming`)
and their figures (`plots`). Below training, so training logs the same numbers the evaluation commands
print."""
