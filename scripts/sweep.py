"""Helpers of the sweep scripts (scripts/lib.sh); see `lit_gpt.reporting.sweeps`.

python scripts/sweep.py compose --yaml configs/lr/tinyllama_60m_lr1e-3.yaml --scale cpu --out run.yaml
python scripts/sweep.py data --scale cpu --build true
python scripts/sweep.py latest --run_dir checkpoints/tinyllama_60M_lr1e-3
python scripts/sweep.py fill --doc scripts/optimization.md --key "lr cpu" --table checkpoints/lr_cpu_report/report.md
"""

from lit_gpt.cli.sweep import main

if __name__ == "__main__":
    main()
