"""What zerotuning's built-in generation tasks ``short_answers`` and ``short_answers_multiturn`` ask.

Three kinds of question with a one-word or one-number answer: arithmetic on small numbers (drawn
with the builder's seed), capitals of countries (from ``capitals.py``) and chemical elements
(from ``elements.py``). The multi-turn variant asks a second question that needs the first
answer: a further operation on the result, the continent of the capital, the atomic number of
the element. Everything here was written for zerotuning.
"""

# Arithmetic: operation word -> (range of a, range of b, result); ranges are inclusive, and a
# range ending in None ends at a - 1 (differences stay positive).
OPERATIONS = {
    "plus": ((2, 49), (2, 49), lambda a, b: a + b),
    "minus": ((10, 99), (2, None), lambda a, b: a - b),
    "times": ((2, 12), (2, 12), lambda a, b: a * b),
}
QUESTION = "What is {a} {operation} {b}?"

# Second turns on an arithmetic result: name -> (text with {k}, range of k). They take turns;
# "subtract" draws k below the result and gives way to "add" on results below 3.
ARITHMETIC_FOLLOW_UPS = {
    "add": ("Now add {k} to that.", (2, 9)),
    "subtract": ("Now subtract {k} from that.", (2, 9)),
    "multiply": ("Now multiply that by {k}.", (2, 3)),
}

CONTINENT_FOLLOW_UP = "Which continent is that city in?"
ATOMIC_NUMBER_FOLLOW_UP = "What is the atomic number of that element?"

# The "Americas" group of capitals.py split into continents (the rest are North America,
# Central America and the Caribbean included).
SOUTH_AMERICA = {"Argentina", "Brazil", "Chile", "Colombia", "Ecuador", "Guyana", "Paraguay", "Peru", "Suriname", "Uruguay", "Venezuela"}
# Capitals whose continent is a matter of convention (Europe or Asia): no continent question.
CONTINENT_UNCLEAR = {"Armenia", "Azerbaijan", "Cyprus", "Georgia"}
# Also right for one country: Australia is a continent of its own in some conventions.
CONTINENT_ALIASES = {"Australia": ("Australia",)}

# Other accepted spellings of an answer (the first reference is the canonical one).
ALIASES = {
    "Washington, D.C.": ("Washington",),
    "Aluminium": ("Aluminum",),
    "Caesium": ("Cesium",),
    "Sulfur": ("Sulphur",),
}

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_word(value: int) -> str | None:
    """The English word for 0-99 (``forty-one``); None from 100 on (digits only there)."""
    if not 0 <= value < 100:
        return None
    if value < 20:
        return _ONES[value]
    tens, ones = divmod(value, 10)
    return _TENS[tens] + ("" if ones == 0 else "-" + _ONES[ones])


def final_number_pattern(value: int) -> str:
    """A regular expression for an answer whose last number is ``value`` ("7 + 5 = 12" yes, "12 + 3 = 15" no)."""
    return rf"(?<![\d.]){value}(?![\d])[^\d]*$"


def symbol_pattern(symbol: str) -> str:
    """A chemical symbol as written, case included ("Co" is cobalt, "CO" is not a symbol)."""
    return rf"(?<![A-Za-z]){symbol}(?![a-z])"
