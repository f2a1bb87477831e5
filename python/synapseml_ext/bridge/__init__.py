"""What the Scala stages call: a driver-side Python process (:mod:`.driver`) that runs the
PySpark stages for them (:mod:`.driver_ops`), and the stage names both sides save under
(:mod:`.names`)."""
