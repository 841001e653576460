"""Analysis: tables and figures, the trace inspector, the step probe and the base's skills."""
