"""A llava-hf chat template made trainable: same prompts, labels on exactly the replies and their end-of-turn token.

framelm's collator trains on the tokens inside the template's `{% generation %}` spans. llava-hf templates come in
a few shapes: older ones have no such spans; newer ones wrap the reply text but leave the end-of-turn token outside
(ChatML's `<|im_end|>`), or have no end-of-turn token at all (the Vicuna-style `USER: ... ASSISTANT: ...` of
LLaVA-1.5 and LLaVA-NeXT-Video, whose replies end in a bare space). Trained on those, a model never learns to stop.
`trainable_chat_template` makes at most four edits and then proves, by rendering probe conversations through the
processor exactly as the collator does, that prompts render as the source renders them and that the labels of
every reply end on the stop token; a template it cannot fix raises `ChatTemplateError` naming `--chat-template`.

0. Text beside media: llava-hf templates print a message's images first, each with its own separating newline
   (`<image>\n`), then its text. LLaVA data puts that newline in the text (`"<image>\nQuestion"`), so the prompt
   would read `<image>\n\nQuestion`, which the source never saw: LLaVA's training strips the text of every turn
   that holds an image. The template's text prints trim the text of messages that hold media, as that training did.
1. Video items: a template with an image loop but no video loop gets a video loop beside it (same shape, the
   video placeholder), so FrameLM's video input can be prompted at all.
2. Reply text: without `{% generation %}` markers, every print of a message's text is wrapped in one, for
   assistant messages only.
3. End of turn: when the template prints the stop token right after the reply (`<|im_end|>`), that print joins the
   span; when it prints none, the stop token is appended inside the span, as LLaVA's own training appended `</s>`
   (this one changes how past assistant turns render, never how a prompt ends).
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

from jinja2 import TemplateError
from trl.chat_template_utils import has_generation_markers

PRINT_TAG = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)
END_GENERATION = re.compile(r"\{%-?\s*endgeneration\s*-?%\}")
# a print of a message's text: `content['text']` inside a content loop, or `message['content']` itself
MESSAGE_TEXT = re.compile(
    r"\bcontent\s*\[\s*['\"]text['\"]\s*\]|\bcontent\.text\b|\bmessage\s*\[\s*['\"]content['\"]\s*\]|\bmessage\.content\b"
)
CONTENT_TEXT = re.compile(r"\bcontent\s*\[\s*['\"]text['\"]\s*\]|\bcontent\.text\b")  # a text item's text
# that text, trimmed in messages with an image or video (`message['content']` is a list wherever items are printed)
TRIMMED_BESIDE_MEDIA = (
    "({text} | trim if message['content'] | rejectattr('type', 'equalto', 'text') | list else {text})"
)
IMAGE_LOOP = re.compile(
    r"\{%-?\s*for\s+\w+\s+in\s+message\s*\[\s*['\"]content['\"]\s*\]\s*\|\s*selectattr\(\s*['\"]type['\"]\s*,"
    r"\s*['\"]equalto['\"]\s*,\s*['\"]image['\"]\s*\)\s*-?%\}.*?\{%-?\s*endfor\s*-?%\}",
    re.S,
)
# probe conversations: words no template prints by itself
QUESTIONS = ("Which colour is the square?", "And the circle?")
REPLIES = ("The square is red.", "The circle is blue.")


class ChatTemplateError(ValueError):
    """A chat template whose assistant replies cannot be marked for training without changing its prompts."""


@dataclass
class TrainableTemplate:
    template: str
    notes: list[str] = field(default_factory=list)  # what was edited, for the import report


def _assistant_only(tag: str) -> str:
    """`tag` inside a generation span for assistant messages, unchanged for the others."""
    return (
        f"{{% if message['role'] == 'assistant' %}}{{% generation %}}{tag}{{% endgeneration %}}"
        f"{{% else %}}{tag}{{% endif %}}"
    )


def _literal(tag_expression: str) -> str | None:
    try:
        value = ast.literal_eval(tag_expression.strip())
    except (ValueError, SyntaxError):
        return None
    return value if isinstance(value, str) else None


def _conversation() -> list[dict]:
    """Two exchanges, the probe whose labels must be exactly the two replies and their stop tokens."""
    messages = []
    for question, reply in zip(QUESTIONS, REPLIES, strict=True):
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    return messages


def _prompts(with_history: bool) -> list[list[dict]]:
    """Conversations ending in a user turn: how the model is prompted (rendered with the generation prompt)."""
    image_question = [{"type": "image"}, {"type": "text", "text": QUESTIONS[0]}]
    prompts = [
        [{"role": "user", "content": image_question}],
        [
            {"role": "system", "content": [{"type": "text", "text": "You are brief."}]},
            {"role": "user", "content": image_question},
        ],
    ]
    history = _conversation() + [{"role": "user", "content": [{"type": "text", "text": "Why?"}]}]
    return prompts + [history] if with_history else prompts


def _renders_video(processor, template: str) -> bool:
    video_turn = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": QUESTIONS[0]}]}]
    try:
        return processor.video_token in processor.apply_chat_template(video_turn, chat_template=template)
    except TemplateError:  # templates that `raise_exception` on content types they do not know
        return False


def _add_video_loop(processor, template: str) -> str | None:
    """A video loop after the template's only image loop, printing the video placeholder where it prints images."""
    loops = IMAGE_LOOP.findall(template)
    if len(loops) != 1 or processor.image_token not in loops[0]:
        return None
    video_loop = re.sub(r"(['\"])image\1", r"\1video\1", loops[0]).replace(
        processor.image_token, processor.video_token
    )
    return template.replace(loops[0], loops[0] + video_loop, 1)


def _render_user_turn(processor, template: str, content: list[dict]) -> str | None:
    try:
        return processor.apply_chat_template([{"role": "user", "content": content}], chat_template=template)
    except TemplateError:
        return None


def _trim_text_beside_media(processor, template: str) -> str | None:
    """The template with the text of media messages trimmed (edit 0), when it separates media from text by a
    newline itself and the edit renders LLaVA-style text as the source renders clean text; else None."""
    question = QUESTIONS[0]
    clean = _render_user_turn(processor, template, [{"type": "image"}, {"type": "text", "text": question}])
    if clean is None or processor.image_token not in clean or question not in clean:
        return None
    separator = clean[clean.index(processor.image_token) + len(processor.image_token) : clean.index(question)]
    if "\n" not in separator:  # the data's own newline is the only separator: keep it
        return None
    edited = PRINT_TAG.sub(
        lambda tag: CONTENT_TEXT.sub(lambda m: TRIMMED_BESIDE_MEDIA.format(text=m.group()), tag.group()), template
    )
    llava_style = [{"type": "image"}, {"type": "text", "text": f"\n{question}\n"}]
    return edited if _render_user_turn(processor, edited, llava_style) == clean else None


def _mark_reply_text(template: str) -> str:
    return PRINT_TAG.sub(
        lambda m: _assistant_only(m.group()) if MESSAGE_TEXT.search(m.group(1)) else m.group(), template
    )


def _masked_spans(processor, template: str) -> list[list[int]]:
    """Token ids of each contiguous run of assistant-masked tokens in the probe conversation."""
    out = processor.apply_chat_template(
        _conversation(),
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    spans, current = [], []
    for token_id, masked in zip(out["input_ids"][0], out["assistant_masks"][0], strict=True):
        if masked:
            current.append(int(token_id))
        elif current:
            spans, current = spans + [current], []
    return spans + [current] if current else spans


def _span_problem(processor, spans: list[list[int]], stop_id: int) -> str | None:
    """Why the labels of the probe conversation are not exactly each reply plus the stop token, or None."""
    tokenizer = processor.tokenizer
    if len(spans) != len(REPLIES):
        return f"{len(spans)} labelled spans for {len(REPLIES)} assistant replies"
    for span, reply in zip(spans, REPLIES, strict=True):
        text = tokenizer.decode(span)
        if reply not in text or any(question in text for question in QUESTIONS):
            return f"a labelled span reads {text!r} instead of the reply {reply!r} and its end of turn"
        content = [token for token in span if tokenizer.decode([token]).strip()]  # trailing newlines may follow
        if not content or content[-1] != stop_id:
            return f"the labels of a reply end on {tokenizer.decode(content[-1:])!r}, not on the stop token"
    return None


def _stop_print_after_replies(template: str) -> re.Match | None:
    """The first print after the last generation span, if it prints a literal (checked by the caller)."""
    ends = list(END_GENERATION.finditer(template))
    if not ends:
        return None
    # skip the `{% else %}<same print>{% endif %}` twin that `_assistant_only` leaves after its span
    twin_end = template.find("{% endif %}", ends[-1].end())
    start = twin_end if template.startswith("{% else %}", ends[-1].end()) else ends[-1].end()
    return PRINT_TAG.search(template, start)


def _include_stop_token(template: str, stop: str) -> tuple[str, str, bool]:
    """The template with the stop token inside each reply's span, a note saying how, and whether past assistant
    turns now render differently."""
    following = _stop_print_after_replies(template)
    if following is not None and (_literal(following.group(1)) or "").startswith(stop):
        wrapped = _assistant_only(following.group())
        note = f"the end-of-turn print {following.group()} now belongs to the reply's labels"
        return template[: following.start()] + wrapped + template[following.end() :], note, False
    stop_print = "{{ " + json.dumps(stop) + " }}"  # a JSON string is a Jinja string literal
    note = (
        f"assistant replies now end with the stop token {stop!r} (the template ended them with none, so a "
        "fine-tuned model would not learn to stop): a prompt renders as the source's, except that the past "
        "replies of a multi-turn prompt end with it too"
    )
    return END_GENERATION.sub(lambda m: stop_print + m.group(), template), note, True


def check_trainable(
    processor, template: str, stop: str, source_template: str | None = None, history_changed: bool = False
) -> None:
    """Raise `ChatTemplateError` unless prompts render as with `source_template` (when given; past assistant turns
    only when not `history_changed`) and the labels of each reply of a probe conversation are exactly the reply and
    the stop token."""
    fix = (
        "write a template whose assistant replies and their end-of-turn token sit inside "
        "{% generation %} ... {% endgeneration %} and pass it with --chat-template FILE"
    )
    if source_template is not None:
        for prompt in _prompts(with_history=not history_changed):
            ours = processor.apply_chat_template(prompt, chat_template=template, add_generation_prompt=True)
            theirs = processor.apply_chat_template(prompt, chat_template=source_template, add_generation_prompt=True)
            if ours != theirs:
                raise ChatTemplateError(f"marking the template changed a prompt ({theirs!r} -> {ours!r}); {fix}")
    stop_id = processor.tokenizer.convert_tokens_to_ids(stop)
    problem = _span_problem(processor, _masked_spans(processor, template), stop_id)
    if problem:
        raise ChatTemplateError(f"the chat template cannot train assistant replies: {problem}; {fix}")


def trainable_chat_template(processor, source_template: str, stop: str) -> TrainableTemplate:
    """`source_template` with video items, reply markers and the stop token added where missing, checked.

    Args:
        processor: a FrameLMProcessor holding the tokenizer and the image/video placeholder strings.
        source_template: the llava-hf checkpoint's chat template.
        stop: the token generation stops at (the tokenizer's EOS token).
    """
    template, notes = source_template, []
    trimmed = _trim_text_beside_media(processor, template)
    if trimmed is not None:
        template = trimmed
        notes.append(
            "the text of a turn with an image or video is trimmed, as LLaVA's training did: '<image>\\nQuestion' "
            "renders with one newline after the image, as the source saw it, not two"
        )
    if not _renders_video(processor, template):
        with_video = _add_video_loop(processor, template)
        if with_video is not None and _renders_video(processor, with_video):
            template = with_video
            notes.append(f"video items render as {processor.video_token!r} after the images, as image items do")
        else:
            notes.append("the chat template renders no video items: prompt this model with images and text only")
    if not has_generation_markers(template):
        template = _mark_reply_text(template)
        notes.append("assistant replies are marked with {% generation %} for assistant-only labels")
    stop_id = processor.tokenizer.convert_tokens_to_ids(stop)
    history_changed = False
    if _span_problem(processor, _masked_spans(processor, template), stop_id):
        template, note, history_changed = _include_stop_token(template, stop)
        notes.append(note)
    check_trainable(processor, template, stop, source_template, history_changed)
    return TrainableTemplate(template, notes)


# --- a causal LM's own template (`framelm init --vision X --language Y`) -------------------------------------------

# Put first in a text-only LM's template: messages whose content is a list of items (FrameLM's image, video and text
# items) become string messages with the placeholders inline, so the LM's template renders them as it renders text.
# A message whose content is already a string is passed through unchanged: text-only prompts render as the LM's own.
FLATTEN_MEDIA_ITEMS = (
    "{%- set framelm_flat = namespace(messages=[]) -%}"
    "{%- for m in messages -%}"
    "{%- if m['content'] is string or m['content'] is none -%}"
    "{%- set framelm_flat.messages = framelm_flat.messages + [m] -%}"
    "{%- else -%}{%- set framelm_text = namespace(text='') -%}{%- for part in m['content'] -%}"
    "{%- if part['type'] == 'text' -%}{%- set framelm_text.text = framelm_text.text + part['text'] -%}"
    "{%- elif part['type'] == 'image' -%}"
    "{%- set framelm_text.text = framelm_text.text + (image_token | default('<image>')) -%}"
    "{%- elif part['type'] == 'video' -%}"
    "{%- set framelm_text.text = framelm_text.text + (video_token | default('<video>')) -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set framelm_flat.messages = framelm_flat.messages + [dict(m, content=framelm_text.text)] -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set messages = framelm_flat.messages -%}\n"
)


def lm_chat_template(processor, lm_template: str, stops: list[str]) -> tuple[TrainableTemplate, str]:
    """(the LM's own chat template made trainable, the stop token it trains). Media items render as placeholders
    inline (`FLATTEN_MEDIA_ITEMS`) unless the template already renders them; replies get `{% generation %}` markers
    and their end-of-turn token, as for an imported llava-hf template. `stops`: candidate end-of-turn tokens, the
    LM's own first; the first whose labels need no change to past turns wins. Raises `ChatTemplateError`."""
    image_turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[0]}]}]
    try:
        renders_media = processor.image_token in processor.apply_chat_template(image_turn, chat_template=lm_template)
    except (TemplateError, TypeError):
        renders_media = False
    source = lm_template if renders_media else FLATTEN_MEDIA_ITEMS + lm_template
    last_error = None
    for stop in stops:
        try:
            trainable = trainable_chat_template(processor, source, stop)
        except (ChatTemplateError, TemplateError) as err:
            last_error = err
            continue
        if not renders_media:
            trainable.notes.insert(0, "image and video items render as their placeholders inside the message text")
        return trainable, stop
    raise ChatTemplateError(
        f"the language model's chat template cannot be made trainable ({last_error}); or pass --chat-template chatml"
    )
