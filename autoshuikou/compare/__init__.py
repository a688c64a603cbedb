"""Side-by-side comparisons of search strategies and fixed baselines."""
