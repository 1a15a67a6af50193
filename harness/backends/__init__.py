"""Model backends: lm-eval task configs (lm_eval.py), the irh-fast scorer (fast.py), model specs (models.py), the fake model (fake.py)."""
