"""The default chat template, saved with the processor as `chat_template.jinja`.

ChatML turns (`<|im_start|>role ... <|im_end|>`) because most current causal LMs (Qwen2/3, SmolLM) already know them.
What it adds over a plain ChatML template:
- transformers content items `{"type": "image"}`, `{"type": "video"}`, `{"type": "text"}` render as the `<image>` /
  `<video>` placeholders the processor expands to their exact token counts;
- each assistant reply and its `<|im_end|>` are wrapped in `{% generation %}`, so
  `apply_chat_template(..., return_assistant_tokens_mask=True)` marks exactly the tokens that carry loss (the reply
  and the end-of-turn that teaches the model to stop), never the system prompt, user turns or media tokens.
"""

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<video>' -}}{%- endif -%}"
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
