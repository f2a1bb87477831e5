"""The stage contract both stages, the Scala bridge and codegen share: column checks
(:mod:`.columns`), which Python stage is which Scala stage (:mod:`.names`), and reading
metadata saved under either name (:mod:`.persistence`)."""
