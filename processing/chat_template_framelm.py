"""The default chat template, saved with the processor as `chat_template.jinja`.

ChatML turns (`<|im_start|>role ... <|im_end|>`) because most current causal LMs (Qwen2/3, SmolLM) already know them.
What it adds over a plain ChatML template:
- transformers content items `{"type": "image"}`, `{"type": "video"}`, `{"type": "text"}` render as the processor's
  placeholders, which it expands to their exact token counts. The template reads them from the `image_token` and
  `video_token` variables that `FrameLMProcessor.apply_chat_template` passes; `IMAGE_TOKEN` / `VIDEO_TOKEN` below, the
  one definition of the default strings, are the fallback for renderers that pass none (a tokenizer's own
  `apply_chat_template`, a serving engine);
- each assistant reply and its `<|im_end|>` are wrapped in `{% generation %}`, so
  `apply_chat_template(..., return_assistant_tokens_mask=True)` marks exactly the tokens that carry loss (the reply
  and the end-of-turn that teaches the model to stop), never the system prompt, user turns or media tokens.
"""

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_TOKEN = "<image>"  # default placeholder strings; a processor saved with others keeps its own
VIDEO_TOKEN = "<video>"

DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- image_token | default('" + IMAGE_TOKEN + "') -}}"
    "{%- elif part['type'] == 'video' -%}{{- video_token | default('" + VIDEO_TOKEN + "') -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}"
    "{%- else -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
