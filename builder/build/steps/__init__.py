"""One executor module per step kind; ``builder.build.scheduler.execute`` dispatches to them."""
