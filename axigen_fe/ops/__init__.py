"""Operations: session logs, masking, metrics."""
