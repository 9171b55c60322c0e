"""Ray Tune layer: trainable, study specs, launch and resume (see issue tracker)."""
