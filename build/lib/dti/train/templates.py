"""Training prompt templates ("{}" is the concept): `object` and `style`, written for this project (plain captions
of a photographed object and of an artwork of it), and `ti_small`, the 27 small ImageNet templates of the original
Textual Inversion implementation, which the official DTI scripts draw from. Evaluation prompt sets are separate
(dti.evaluate.prompts)."""

OBJECT = [
    "a photo of a {}", "a photo of the {}", "a close-up photo of a {}", "a cropped photo of the {}",
    "a bright photo of the {}", "a dark photo of the {}", "a good photo of a {}", "a photo of one {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a photo of my {}", "a photo of the small {}",
    "a photo of the large {}", "a photo of a nice {}", "a blurry photo of the {}", "a rendition of the {}",
    "a close-up photo of the {}", "a picture of a {}", "a snapshot of the {}", "an image of the {}",
    "a photo of a {} on a table", "a photo of the {} indoors", "a photo of the {} outdoors",
    "a centered photo of a {}", "a well-lit photo of the {}",
]

STYLE = [
    "a painting in the style of {}", "a rendering in the style of {}", "a cropped painting in the style of {}",
    "the painting in the style of {}", "a clean painting in the style of {}", "a dirty painting in the style of {}",
    "a dark painting in the style of {}", "a picture in the style of {}", "a cool painting in the style of {}",
    "a close-up painting in the style of {}", "a bright painting in the style of {}",
    "a good painting in the style of {}", "a small painting in the style of {}", "a large painting in the style of {}",
    "an illustration in the style of {}", "artwork in the style of {}",
]

# the original Textual Inversion code's `imagenet_templates_small`, in its order
TI_SMALL = [
    "a photo of a {}", "a rendering of a {}", "a cropped photo of the {}", "the photo of a {}",
    "a photo of a clean {}", "a photo of a dirty {}", "a dark photo of the {}", "a photo of my {}",
    "a photo of the cool {}", "a close-up photo of a {}", "a bright photo of the {}", "a cropped photo of a {}",
    "a photo of the {}", "a good photo of the {}", "a photo of one {}", "a close-up photo of the {}",
    "a rendition of the {}", "a photo of the clean {}", "a rendition of a {}", "a photo of a nice {}",
    "a good photo of a {}", "a photo of the nice {}", "a photo of the small {}", "a photo of the weird {}",
    "a photo of the large {}", "a photo of a cool {}", "a photo of a small {}",
]

TEMPLATES = {"object": OBJECT, "style": STYLE, "ti_small": TI_SMALL}
