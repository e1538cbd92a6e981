"""Results over runs: the sweep table (`table`), the HTML report (`html`), the reproduction grid and its
scorecard (`reproduction`), and the helpers of the sweep scripts (`sweeps`)."""
