"""Small multilingual corpora written on the fly, for tests and the benchmark.

Documents are random combinations of hand-written sentences (written for this project), so
they are real language that py3langid recognises, distinct from one another, and seeded.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from mt5study.data.sources import stable_seed

SENTENCES: dict[str, list[str]] = {
    "en": [
        "The train to the coast leaves every morning at seven from the main station.",
        "My neighbour grows tomatoes and beans in a small garden behind the house.",
        "When the library closes for the summer, the children read in the park instead.",
        "She wrote a long letter to her brother, who had moved to another country.",
        "The weather was cold and windy, so we stayed inside and played cards all evening.",
        "Most people in the village still buy their bread from the old bakery on the square.",
        "After the meeting, the engineers went back to their desks to fix the broken program.",
        "He forgot his umbrella on the bus and walked home through the heavy rain.",
        "The museum shows paintings by local artists and a collection of ancient coins.",
        "Our teacher asked us to write a short story about a journey we would like to make.",
        "The river flooded the fields last spring, and the farmers had to wait for weeks.",
        "Please remember to switch off the lights and lock the door when you leave the office.",
    ],
    "de": [
        "Der Zug an die Küste fährt jeden Morgen um sieben Uhr vom Hauptbahnhof ab.",
        "Mein Nachbar baut in einem kleinen Garten hinter dem Haus Tomaten und Bohnen an.",
        "Wenn die Bibliothek im Sommer schließt, lesen die Kinder stattdessen im Park.",
        "Sie schrieb ihrem Bruder, der in ein anderes Land gezogen war, einen langen Brief.",
        "Das Wetter war kalt und windig, also blieben wir drinnen und spielten den ganzen Abend Karten.",
        "Die meisten Leute im Dorf kaufen ihr Brot immer noch bei der alten Bäckerei am Marktplatz.",
        "Nach der Besprechung gingen die Ingenieure zurück an ihre Schreibtische, um das Programm zu reparieren.",
        "Er vergaß seinen Regenschirm im Bus und ging durch den starken Regen nach Hause.",
        "Das Museum zeigt Gemälde von Künstlern aus der Gegend und eine Sammlung alter Münzen.",
        "Unsere Lehrerin bat uns, eine kurze Geschichte über eine Reise zu schreiben, die wir gern machen würden.",
        "Der Fluss hat im letzten Frühjahr die Felder überschwemmt, und die Bauern mussten wochenlang warten.",
        "Bitte denken Sie daran, das Licht auszuschalten und die Tür abzuschließen, wenn Sie das Büro verlassen.",
    ],
    "fr": [
        "Le train pour la côte part chaque matin à sept heures de la gare centrale.",
        "Mon voisin cultive des tomates et des haricots dans un petit jardin derrière la maison.",
        "Quand la bibliothèque ferme pour l'été, les enfants lisent dans le parc.",
        "Elle a écrit une longue lettre à son frère, qui était parti vivre dans un autre pays.",
        "Il faisait froid et il y avait du vent, alors nous sommes restés à l'intérieur à jouer aux cartes.",
        "La plupart des habitants du village achètent encore leur pain à la vieille boulangerie de la place.",
        "Après la réunion, les ingénieurs sont retournés à leurs bureaux pour réparer le programme.",
        "Il a oublié son parapluie dans le bus et il est rentré à pied sous une pluie battante.",
        "Le musée présente des tableaux d'artistes de la région et une collection de pièces anciennes.",
        "Notre professeur nous a demandé d'écrire une courte histoire sur un voyage que nous aimerions faire.",
        "Au printemps dernier, la rivière a inondé les champs et les agriculteurs ont dû attendre des semaines.",
        "N'oubliez pas d'éteindre la lumière et de fermer la porte à clé en quittant le bureau.",
    ],
    "es": [
        "El tren a la costa sale todas las mañanas a las siete desde la estación central.",
        "Mi vecino cultiva tomates y judías en un pequeño huerto detrás de la casa.",
        "Cuando la biblioteca cierra en verano, los niños leen en el parque.",
        "Ella escribió una carta larga a su hermano, que se había mudado a otro país.",
        "Hacía frío y mucho viento, así que nos quedamos dentro jugando a las cartas toda la tarde.",
        "La mayoría de la gente del pueblo todavía compra el pan en la vieja panadería de la plaza.",
        "Después de la reunión, los ingenieros volvieron a sus mesas para arreglar el programa.",
        "Olvidó su paraguas en el autobús y volvió a casa caminando bajo la lluvia.",
        "El museo muestra cuadros de artistas de la zona y una colección de monedas antiguas.",
        "Nuestra profesora nos pidió que escribiéramos un cuento sobre un viaje que nos gustaría hacer.",
        "La primavera pasada el río inundó los campos y los agricultores tuvieron que esperar semanas.",
        "Por favor, recuerde apagar las luces y cerrar la puerta con llave cuando salga de la oficina.",
    ],
}


def make_documents(lang: str, n: int, seed: int = 0, sentences: tuple[int, int] = (5, 10)) -> list[str]:
    """n distinct documents of `lang`: paragraphs of random sentences, seeded."""
    pool = SENTENCES[lang]
    rng = np.random.default_rng([seed, stable_seed(lang)])
    docs, seen = [], set()
    while len(docs) < n:
        k = int(rng.integers(sentences[0], sentences[1] + 1))
        idx = rng.choice(len(pool), size=k, replace=True)
        cut = int(rng.integers(1, k))
        text = " ".join(pool[i] for i in idx[:cut]) + "\n\n" + " ".join(pool[i] for i in idx[cut:])
        if text not in seen:
            seen.add(text)
            docs.append(text)
    return docs


def write_jsonl_corpus(folder: str | Path, sizes: dict[str, int], seed: int = 0, gz: bool = True,
                       mc4_schema: bool = False) -> dict[str, Path]:
    """Write <lang>.jsonl[.gz] files of `sizes[lang]` documents; mC4's fields if mc4_schema."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for lang, n in sizes.items():
        path = folder / (f"c4-{lang}.tfrecord-00000-of-00001.json.gz" if mc4_schema else f"{lang}.jsonl" + (".gz" if gz else ""))
        lines = []
        for i, text in enumerate(make_documents(lang, n, seed)):
            rec = {"text": text}
            if mc4_schema:
                rec = {"text": text, "timestamp": "2020-01-01T00:00:00Z", "url": f"https://example.org/{lang}/{i}"}
            lines.append(json.dumps(rec, ensure_ascii=False))
        data = ("\n".join(lines) + "\n").encode("utf-8")
        path.write_bytes(gzip.compress(data, mtime=0) if gz or mc4_schema else data)
        paths[lang] = path
    return paths
