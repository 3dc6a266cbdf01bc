"""Embedding files: the learned rows in the layouts other tools read (layouts), reading any of them back as rows
per encoder (reading), and what a run writes (writing)."""

from dti.method.formats.reading import ReadEmbedding, read_embedding
from dti.method.formats.writing import (
    ToolFileWriter,
    a1111_pt_file,
    add_tokens,
    emb_params_file,
    encoder_keys_file,
    file_metadata,
    onetrainer_file,
    read_token_file,
    save_embeddings,
    write_kohya_lora,
)

__all__ = ["ReadEmbedding", "ToolFileWriter", "a1111_pt_file", "add_tokens", "emb_params_file",
           "encoder_keys_file", "file_metadata", "onetrainer_file", "read_embedding", "read_token_file",
           "save_embeddings", "write_kohya_lora"]
