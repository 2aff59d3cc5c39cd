"""`segserve finetune` / `segserve evaluate`: datasets, recipes, the training loop."""
