"""The seed libraries' examples run on streamstore with only their import lines changed.

(And the Redis address: the seeds connect to localhost:6379, the tests to their own server.)
"""

from __future__ import annotations

from pprint import pprint
from urllib.parse import urlsplit

import pytest

from streamstore import ConfigurationError
from streamstore.compat import pydantic_aioredis, pydantic_redis
from streamstore.table import TableModel

# The seeds' examples connect by host and port to one server.
pytestmark = pytest.mark.single_node

SEED_UPDATE_OUTPUT = """\
single update:
[   Book(title='Jane Eyre', author='Daniel McKenzie'),
    Book(title='Oliver Twist', author='Charlie Ickens'),
    Book(title='Pride and Prejudice', author='Jane Austen')]

multi update:
[   Book(title='Jane Eyre', author='Emiliano Bronte'),
    Book(title='Oliver Twist', author='Chuck Dickens'),
    Book(title='Pride and Prejudice', author='Janey Austen')]
"""


def server(redis_url: str) -> dict[str, object]:
    url = urlsplit(redis_url)
    return {"host": url.hostname, "port": url.port, "db": int(url.path[1:] or 0)}


async def test_the_pydantic_redis_update_tutorial_prints_what_its_docs_show(
    redis, redis_url, capsys
):
    # The seed's import line, changed: both compat modules use the same names, hence here.
    from streamstore.compat.pydantic_redis import Model, RedisConfig, Store  # noqa: PLC0415

    class Book(Model):
        _primary_key_field: str = "title"
        title: str
        author: str

    store = Store(
        name="some_name", redis_config=RedisConfig(**server(redis_url)), life_span_in_seconds=3600
    )
    store.register_model(Book)

    await Book.insert(
        [
            Book(title="Oliver Twist", author="Charles Dickens"),
            Book(title="Jane Eyre", author="Emily Bronte"),
            Book(title="Pride and Prejudice", author="Jane Austen"),
        ]
    )
    await Book.update(_id="Oliver Twist", data={"author": "Charlie Ickens"})
    await Book.update(_id="Jane Eyre", data={"author": "Daniel McKenzie"}, life_span_seconds=1800)
    single_update_response = await Book.select()

    await Book.insert(
        [
            Book(title="Oliver Twist", author="Chuck Dickens"),
            Book(title="Jane Eyre", author="Emiliano Bronte"),
            Book(title="Pride and Prejudice", author="Janey Austen"),
        ],
        life_span_seconds=3600,
    )
    multi_update_response = await Book.select()

    print("single update:")
    pprint(single_update_response, indent=4)
    print("\nmulti update:")
    pprint(multi_update_response, indent=4)

    assert capsys.readouterr().out == SEED_UPDATE_OUTPUT


async def test_the_pydantic_aioredis_automatic_saving_example(redis, redis_url):
    from streamstore.compat.pydantic_aioredis import AutoModel, Model, RedisConfig, Store  # noqa: PLC0415

    class Book(Model):
        _primary_key_field: str = "title"
        title: str
        author: str

        _auto_save: bool = True
        _auto_sync: bool = True

    class Movie(Model):
        _primary_key_field: str = "title"
        title: str
        director: str

        _auto_sync: bool = True

    class Song(AutoModel):
        _primary_key_field: str = "title"
        title: str
        author: str = ""

    store = Store(
        name="some_name", redis_config=RedisConfig(**server(redis_url)), life_span_in_seconds=3600
    )
    store.register_model(Book)
    store.register_model(Movie)
    store.register_model(Song)

    # (The seed's text writes ids['The Hobbit'] for ids=['The Hobbit'], a typo.)
    my_book = Book(title="The Hobbit", author="J.R.R. Tolkien")
    book_from_redis = await Book.select(ids=["The Hobbit"])
    assert book_from_redis[0] == my_book

    my_book.author = "J.R.R. Tolkien II"
    book_from_redis = await Book.select(ids=["The Hobbit"])
    assert book_from_redis[0] == my_book

    my_movie = Movie(title="The Lord of the Rings", director="Peter Jackson")
    await Movie.insert(my_movie)
    my_movie.director = "Peter Jackson II"
    movie_from_redis = await Movie.select(ids=["The Lord of the Rings"])
    assert movie_from_redis[0] == my_movie

    Book(title="The Silmarillion", author="J.R.R. Tolkien", _auto_save=False, _auto_sync=False)
    books_in_redis = await Book.select()
    assert len(books_in_redis) == 1

    my_song = Song(title="The Hobbit")
    song_from_redis = await Song.select(ids=["The Hobbit"])
    assert song_from_redis[0] == my_song
    my_song.author = "J.R.R. Tolkien II"
    song_from_redis = await Song.select(ids=["The Hobbit"])
    assert song_from_redis[0] == my_song


def test_the_compat_modules_expose_the_seed_names():
    assert pydantic_redis.Model is TableModel
    assert {"Model", "RedisConfig", "Store"} <= set(pydantic_redis.__all__)
    assert {"AutoModel", "Model", "RedisConfig", "Store"} <= set(pydantic_aioredis.__all__)
    assert issubclass(pydantic_aioredis.AutoModel, pydantic_aioredis.Model)


@pytest.mark.parametrize("module", [pydantic_redis, pydantic_aioredis])
def test_a_compat_model_without_a_primary_key_is_refused(module):
    with pytest.raises(ConfigurationError, match="primary key"):
        type("Keyless", (module.Model,), {"__annotations__": {"title": str}})
