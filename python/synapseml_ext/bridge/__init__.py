"""What the Scala stages call: a driver-side Python process (:mod:`.driver`) that runs the
PySpark stages for them (:mod:`.driver_ops`). The stage names both sides save under are
:mod:`synapseml_ext.contract.names`."""
