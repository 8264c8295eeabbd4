"""The short mixed prompts the chat benchmarks send (``bench_chat.py``, ``bench_llama_cpp.py``).

A module without imports, so that llama.cpp's separate venv can load it too.
"""

PROMPTS = (
    "Tell me about the Great Wall of China.",
    "请用三句话介绍一下北京和上海。",
    "Write a short poem about the sea.",
    "What is machine learning? Explain it simply.",
    "今天天气晴朗，我们去公园散步好吗？",
    "Summarize the history of science in a few sentences.",
    "How many people live in Shanghai, and why is it important?",
    "Explain gravity to a child.",
)
