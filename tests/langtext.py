"""Made-up sentences in ten languages, from small phrase tables written for this project.

``sentences(lang, n, seed)`` joins a subject, a verb phrase and a tail (two such clauses when one
is shorter than ``min_chars``), so the same seed always gives the same text. Nothing here comes
from any dataset.
"""

from __future__ import annotations

import random

LANGUAGES = ("en", "de", "fr", "es", "pt", "it", "ru", "zh", "ja", "ar")

# (subjects, verb phrases, tails, clause joiner, sentence end)
TABLES: dict[str, tuple[list[str], list[str], list[str], str, str]] = {
    "en": (
        ["My neighbour", "The old ferry captain", "Our county library", "A retired welder", "The night nurse",
         "My grandmother", "The bakery on the corner"],
        ["swore that the river", "told me the market", "kept insisting that the garden", "once admitted the bridge",
         "wrote in a letter that the school", "always said the harbour", "laughed because the station"],
        ["floods every spring after the snow melts", "was busier before the new road opened",
         "needs more sunlight than anyone thinks", "was painted the wrong colour twice",
         "closes early on the first Monday of the month", "smells of bread and diesel in the morning",
         "has not changed since we were children"],
        ", and ", ".",
    ),
    "de": (
        ["Mein Nachbar", "Der alte Fährmann", "Unsere Stadtbibliothek", "Ein pensionierter Schweißer",
         "Die Nachtschwester", "Meine Großmutter", "Die Bäckerei an der Ecke"],
        ["schwor, dass der Fluss", "erzählte mir, dass der Markt", "bestand darauf, dass der Garten",
         "gab einmal zu, dass die Brücke", "schrieb in einem Brief, dass die Schule", "sagte immer, dass der Hafen",
         "lachte, weil der Bahnhof"],
        ["jedes Frühjahr nach der Schneeschmelze über die Ufer tritt", "vor der neuen Straße viel belebter war",
         "mehr Sonne braucht, als alle denken", "zweimal in der falschen Farbe gestrichen wurde",
         "am ersten Montag im Monat früher schließt", "morgens nach Brot und Diesel riecht",
         "sich seit unserer Kindheit nicht verändert hat"],
        ", und ", ".",
    ),
    "fr": (
        ["Mon voisin", "Le vieux capitaine du bac", "Notre bibliothèque municipale", "Un soudeur à la retraite",
         "L'infirmière de nuit", "Ma grand-mère", "La boulangerie du coin"],
        ["jurait que la rivière", "m'a dit que le marché", "répétait que le jardin", "a avoué un jour que le pont",
         "a écrit dans une lettre que l'école", "disait toujours que le port", "riait parce que la gare"],
        ["déborde chaque printemps après la fonte des neiges", "était plus animé avant la nouvelle route",
         "a besoin de plus de soleil qu'on ne le croit", "a été peint deux fois de la mauvaise couleur",
         "ferme plus tôt le premier lundi du mois", "sent le pain et le gazole le matin",
         "n'a pas changé depuis notre enfance"],
        ", et ", ".",
    ),
    "es": (
        ["Mi vecino", "El viejo capitán del transbordador", "Nuestra biblioteca municipal", "Un soldador jubilado",
         "La enfermera de noche", "Mi abuela", "La panadería de la esquina"],
        ["juraba que el río", "me contó que el mercado", "insistía en que el jardín", "admitió una vez que el puente",
         "escribió en una carta que la escuela", "siempre decía que el puerto", "se reía porque la estación"],
        ["se desborda cada primavera después del deshielo", "estaba más animado antes de la carretera nueva",
         "necesita más sol de lo que todos piensan", "fue pintado dos veces del color equivocado",
         "cierra temprano el primer lunes del mes", "huele a pan y a gasóleo por la mañana",
         "no ha cambiado desde que éramos niños"],
        ", y ", ".",
    ),
    "pt": (
        ["O meu vizinho", "O velho capitão da balsa", "A nossa biblioteca municipal", "Um soldador aposentado",
         "A enfermeira da noite", "A minha avó", "A padaria da esquina"],
        ["jurava que o rio", "contou-me que o mercado", "insistia que o jardim", "admitiu uma vez que a ponte",
         "escreveu numa carta que a escola", "sempre dizia que o porto", "ria-se porque a estação"],
        ["transborda todas as primaveras depois do degelo", "era mais movimentado antes da estrada nova",
         "precisa de mais sol do que todos pensam", "foi pintada duas vezes da cor errada",
         "fecha mais cedo na primeira segunda-feira do mês", "cheira a pão e a gasóleo de manhã",
         "não mudou desde que éramos crianças"],
        ", e ", ".",
    ),
    "it": (
        ["Il mio vicino", "Il vecchio capitano del traghetto", "La nostra biblioteca comunale", "Un saldatore in pensione",
         "L'infermiera del turno di notte", "Mia nonna", "La panetteria all'angolo"],
        ["giurava che il fiume", "mi ha detto che il mercato", "insisteva che il giardino", "ha ammesso una volta che il ponte",
         "ha scritto in una lettera che la scuola", "diceva sempre che il porto", "rideva perché la stazione"],
        ["straripa ogni primavera dopo il disgelo", "era più vivace prima della strada nuova",
         "ha bisogno di più sole di quanto si pensi", "è stato dipinto due volte del colore sbagliato",
         "chiude presto il primo lunedì del mese", "profuma di pane e di gasolio la mattina",
         "non è cambiato da quando eravamo bambini"],
        ", e ", ".",
    ),
    "ru": (
        ["Мой сосед", "Старый капитан парома", "Наша городская библиотека", "Один сварщик на пенсии",
         "Ночная медсестра", "Моя бабушка", "Пекарня на углу"],
        ["клялся, что река", "рассказал мне, что рынок", "настаивал, что сад", "однажды признался, что мост",
         "написал в письме, что школа", "всегда говорил, что порт", "смеялся, потому что вокзал"],
        ["разливается каждую весну после таяния снега", "был оживлённее до новой дороги",
         "требует больше солнца, чем все думают", "дважды покрасили не в тот цвет",
         "закрывается раньше в первый понедельник месяца", "по утрам пахнет хлебом и соляркой",
         "не изменился с тех пор, как мы были детьми"],
        ", и ", ".",
    ),
    "zh": (
        ["我的邻居", "那位老渡船船长", "我们县里的图书馆", "一位退休的焊工", "值夜班的护士", "我的奶奶", "街角那家面包店"],
        ["发誓说那条河", "告诉我那个市场", "一直坚持说那个花园", "有一次承认那座桥", "在信里写道那所学校",
         "总是说那个港口", "笑着说火车站"],
        ["每年春天雪化以后都会涨水", "在新路修好之前热闹得多", "需要的阳光比大家想的多得多",
         "两次都被刷成了错误的颜色", "每个月第一个星期一都提前关门", "早上闻起来有面包和柴油的味道",
         "从我们小时候到现在一点都没变"],
        "，而且", "。",
    ),
    "ja": (
        ["隣に住んでいる人は", "年老いた渡し船の船長は", "私たちの町の図書館は", "引退した溶接工は",
         "夜勤の看護師は", "私の祖母は", "角のパン屋さんは"],
        ["川について", "市場のことを", "庭について", "橋のことを", "学校について", "港のことを", "駅について"],
        ["毎年春になると雪解けの後で水があふれると言っていました", "新しい道路ができる前はもっとにぎやかだったと話していました",
         "みんなが思っているよりずっと日当たりが必要だと言い張りました", "二回も間違った色で塗られてしまったと認めました",
         "毎月最初の月曜日は早めに閉まると手紙に書いていました", "朝になるとパンと軽油のにおいがすると笑っていました",
         "私たちが子供のころから少しも変わっていないと言いました"],
        "。そして", "。",
    ),
    "ar": (
        ["جاري", "قبطان العبارة العجوز", "مكتبة مدينتنا", "لحام متقاعد", "ممرضة الليل", "جدتي", "المخبز الذي على الزاوية"],
        ["أقسم أن النهر", "أخبرني أن السوق", "أصر على أن الحديقة", "اعترف مرة أن الجسر", "كتب في رسالة أن المدرسة",
         "كان يقول دائما إن الميناء", "ضحك لأن المحطة"],
        ["يفيض كل ربيع بعد ذوبان الثلوج", "كان أكثر ازدحاما قبل الطريق الجديد", "يحتاج إلى شمس أكثر مما يظن الجميع",
         "طلي مرتين باللون الخطأ", "يغلق مبكرا في أول يوم اثنين من الشهر", "تفوح منه رائحة الخبز والديزل في الصباح",
         "لم يتغير منذ كنا أطفالا"],
        "، و", ".",
    ),
}


def clause(lang: str, rng: random.Random) -> str:
    subjects, verbs, tails, _, _ = TABLES[lang]
    sep = "" if lang in ("zh", "ja") else " "
    return sep.join([rng.choice(subjects), rng.choice(verbs), rng.choice(tails)])


def sentences(lang: str, n: int, seed: int = 0, min_chars: int = 50) -> list[str]:
    """``n`` distinct made-up sentences of at least ``min_chars`` characters in ``lang``."""
    rng = random.Random(f"{lang}:{seed}")
    joiner, end = TABLES[lang][3], TABLES[lang][4]
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        s = clause(lang, rng)
        while len(s) < min_chars:
            s += joiner + clause(lang, rng)
        s += end
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def document(lang: str, n_sentences: int, seed: int = 0) -> str:
    """A paragraph of made-up sentences in ``lang``."""
    sep = "" if lang in ("zh", "ja") else " "
    return sep.join(sentences(lang, n_sentences, seed))
