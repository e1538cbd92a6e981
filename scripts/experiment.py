"""Helpers of the sweep scripts (scripts/lib.sh); see `lit_gpt.experiments`.

    python scripts/experiment.py compose --yaml configs/lr/tinyllama_60m_lr1e-3.yaml --scale cpu --out run.yaml
    python scripts/experiment.py data --scale cpu --build true
    python scripts/experiment.py latest --run_dir checkpoints/tinyllama_60M_lr1e-3
    python scripts/experiment.py fill --doc scripts/optimization.md --key "lr cpu" --table checkpoints/lr_cpu_report/report.md
"""

from lit_gpt.cli.experiment import main

if __name__ == "__main__":
    main()
