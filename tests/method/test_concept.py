import pytest
import torch

from dti.core.errors import InputError
from dti.method.concept import ConceptEmbedding, add_concept
from dti.method.magnitude import FixedValue, Free, InitializerNorm, VocabNorm
from dti.offline.clip_tokenizer import CLIP_VOCAB_SIZE, build_clip_tokenizer
from dti.offline.tiny import load_tiny_sdxl, tiny_sdxl_path


@pytest.fixture
def backbone():
    return load_tiny_sdxl()


def test_offline_clip_tokenizer_is_the_real_one():
    tok = build_clip_tokenizer()
    assert len(tok) == CLIP_VOCAB_SIZE == 49408
    assert tok("a photo of a dog").input_ids == [49406, 320, 1125, 539, 320, 1929, 49407]
    assert build_clip_tokenizer(pad_token="!").pad_token_id == 0


def test_tiny_sdxl_loads_from_disk_with_full_tokenizers(backbone):
    assert (tiny_sdxl_path() / "model_index.json").is_file()
    assert len(backbone.tokenizer) == len(backbone.tokenizer_2) == 49408
    assert backbone.tokenizer_2.pad_token == "!"
    # the tiny checkpoint keeps SDXL's legacy config; the adapter switches pooling to the EOS position
    import json
    assert json.loads((tiny_sdxl_path() / "text_encoder_2" / "config.json").read_text())["eos_token_id"] == 2
    assert backbone.text_encoder_2.text_model.eos_token_id == 49407


def test_lookup_reads_frozen_rows_for_old_ids_and_scaled_directions_for_new(backbone):
    frozen = {s.key: s.input_embeddings().weight.detach().clone() for s in backbone.encoders}
    concept = add_concept(backbone.encoders, "<toy>", "toy", VocabNorm("mean"))
    for slot in backbone.encoders:
        emb = slot.input_embeddings()
        assert isinstance(emb, ConceptEmbedding) and emb.first_id == 49408
        table = concept.tables[slot.key]
        ids = torch.tensor([[49406, 320, 49408, 49407]])
        out = emb(ids)
        assert torch.equal(out[0, [0, 1, 3]], frozen[slot.key][[49406, 320, 49407]])
        assert torch.allclose(out[0, 2], table.magnitude[0] * table.weight[0])
        out.sum().backward()
        assert table.weight.grad is not None and emb.frozen.weight.grad is None
        assert not emb.frozen.weight.requires_grad
        assert table.weight.dtype == torch.float32 and table.weight.shape == (1, 32)


def test_multi_token_initializer_gives_one_vector_per_token(backbone):
    concept = add_concept(backbone.encoders, "<plush>", "stuffed animal", VocabNorm("mean"))
    assert concept.tokens == ["<plush>", "<plush>_1"]
    assert concept.prompt("a photo of a {}") == "a photo of a <plush> <plush>_1"
    init_ids = backbone.tokenizer("stuffed animal", add_special_tokens=False).input_ids
    assert len(init_ids) == 2
    vocab = backbone.encoders[0].input_embeddings().frozen.weight
    prior = torch.nn.functional.normalize(vocab[init_ids].float(), dim=-1)
    assert torch.allclose(concept.tables["clip_l"].prior, prior)
    assert torch.allclose(concept.tables["clip_l"].weight, prior)  # DTI starts at the initializer direction


def test_num_vectors_forces_the_count_and_repeats_the_last_initializer_token(backbone):
    concept = add_concept(backbone.encoders, "<toy>", "stuffed animal", VocabNorm("mean"), num_vectors=3)
    assert concept.tokens == ["<toy>", "<toy>_1", "<toy>_2"]
    prior = concept.tables["clip_g"].prior
    assert torch.equal(prior[1], prior[2]) and not torch.equal(prior[0], prior[1])
    one = add_concept(load_tiny_sdxl().encoders, "<toy>", "stuffed animal", VocabNorm("mean"), num_vectors=1)
    assert one.tokens == ["<toy>"]


def test_magnitudes(backbone):
    vocab = backbone.encoders[0].input_embeddings().weight.detach().float()
    norms = vocab.norm(dim=-1)
    init = vocab[[320, 1929]]
    special = backbone.tokenizer.all_special_ids
    assert torch.allclose(VocabNorm("mean")(vocab, init, special), norms.mean().expand(2))
    assert torch.allclose(VocabNorm("min")(vocab, init, special), norms.min().expand(2))
    assert torch.allclose(VocabNorm("max")(vocab, init, special), norms.max().expand(2))
    keep = torch.ones(len(norms), dtype=torch.bool)
    keep[special] = False
    assert torch.allclose(VocabNorm("mean", exclude_special=True)(vocab, init, special), norms[keep].mean().expand(2))
    assert torch.equal(FixedValue(5.0)(vocab, init, special), torch.tensor([5.0, 5.0]))
    assert torch.allclose(InitializerNorm()(vocab, init, special), norms[[320, 1929]])
    assert Free()(vocab, init, special) is None
    for bad in (0, -1.0, "x", float("inf")):
        with pytest.raises(InputError, match="magnitude.value"):
            FixedValue(bad)


def test_fixed_magnitude_rows_have_that_norm_and_free_rows_are_the_initializer(backbone):
    concept = add_concept(backbone.encoders, "<toy>", "toy", FixedValue(5.0))
    assert torch.allclose(concept.embeddings()["clip_l"].norm(dim=-1), torch.tensor([5.0]))
    ti = add_concept(load_tiny_sdxl().encoders, "<toy>", "toy", Free())
    vocab = load_tiny_sdxl().encoders[0].input_embeddings().weight
    toy_id = backbone.tokenizer("toy", add_special_tokens=False).input_ids
    assert torch.equal(ti.embeddings()["clip_l"], vocab[toy_id].detach().float())


@pytest.mark.parametrize("placeholder", ["dog", "a b", "<|endoftext|>"])
def test_placeholder_already_in_vocabulary_or_with_spaces_is_refused(backbone, placeholder):
    with pytest.raises(InputError, match="placeholder"):
        add_concept(backbone.encoders, placeholder, "dog", VocabNorm("mean"))


def test_initializer_that_tokenizes_to_nothing_is_refused(backbone):
    with pytest.raises(InputError, match="initializer"):
        add_concept(backbone.encoders, "<x>", "   ", VocabNorm("mean"))


def test_a_failed_add_concept_leaves_the_backbone_untouched():
    from dti.method.concept import add_concept
    from dti.method.magnitude import VocabNorm
    from dti.offline.tiny import load_tiny_sdxl

    backbone = load_tiny_sdxl()
    before = [(s.tokenizer, s.input_embeddings()) for s in backbone.encoders]
    calls = []

    def failing_on_second_encoder(vocab, init, special):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return VocabNorm()(vocab, init, special)

    with pytest.raises(RuntimeError):
        add_concept(backbone.encoders, "<toy>", "toy", failing_on_second_encoder)
    assert [(s.tokenizer, s.input_embeddings()) for s in backbone.encoders] == before
    assert len(backbone.encoders[0].tokenizer) == 49408


def test_nested_concepts_keep_gemmas_embedding_scale():
    import torch

    from dti.method.concept import add_concept
    from dti.method.magnitude import FixedValue
    from dti.offline.tiny import load_tiny

    backbone = load_tiny("dti.backbones.sana.SanaBackbone", "tiny_sana")
    scale = backbone.encoders[0].input_embeddings().embed_scale
    assert scale is not None and float(scale) > 1  # Gemma-2 scales its lookup by sqrt(hidden) in transformers 5
    first = add_concept(backbone.encoders, "<a>", "toy", FixedValue(2.0))
    second = add_concept(backbone.encoders, "<b>", "ball", FixedValue(2.0))
    lookup = backbone.encoders[0].input_embeddings()
    ids = torch.tensor([[first_id(backbone, "<a>"), first_id(backbone, "<b>")]])
    rows = lookup(ids)[0]
    assert torch.allclose(rows.norm(dim=-1), torch.full((2,), 2.0 * float(scale)), rtol=1e-5)
    second.remove()
    first.remove()
    assert type(backbone.encoders[0].input_embeddings()).__name__ != "ConceptEmbedding"


def first_id(backbone, token):
    return backbone.encoders[0].tokenizer.convert_tokens_to_ids(token)
