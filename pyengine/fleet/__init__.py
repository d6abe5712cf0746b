"""Fleet mode: state shared through Redis or Valkey by every engine that points at it (contract §9)."""
