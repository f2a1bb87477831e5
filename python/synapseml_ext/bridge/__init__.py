"""What the JVM calls: ``load(spec_json) -> (function, return type)`` on executors.

Kept light: it is imported by Spark's Python worker while it unpickles the command a Scala
stage sent, before any task data arrives. Heavy libraries load later, inside the executor
functions, as on the PySpark path.
"""

from synapseml_ext.bridge.protocol import PROTOCOL_VERSION, load

__all__ = ["PROTOCOL_VERSION", "load"]
