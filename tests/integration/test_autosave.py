"""Automatic saving: _auto_save on construction, _auto_sync on assignment, update() blocks."""

from __future__ import annotations

import pytest
from test_table import store_for

from streamstore import DocumentNotFoundError, FieldTypeError, UsageError
from streamstore.autosave import AutoModel, AutoSaving


class Book(AutoSaving):
    _primary_key_field: str = "title"
    title: str
    author: str
    pages: int = 0

    _auto_save: bool = True
    _auto_sync: bool = True

    class Meta:
        key_prefix = "AutosaveBook"


class Movie(AutoSaving):
    _primary_key_field: str = "title"
    title: str
    director: str

    _auto_sync: bool = True

    class Meta:
        key_prefix = "AutosaveMovie"


class Song(AutoModel):
    _primary_key_field: str = "title"
    title: str
    artist: str = ""

    class Meta:
        key_prefix = "AutosaveSong"


@pytest.fixture(autouse=True)
def store(redis, redis_url):
    store = store_for(redis_url, name="some_name", life_span=3600)
    for model in (Book, Movie, Song):
        store.register_model(model)
    return store


async def test_the_seed_example_of_automatic_saving(redis):
    my_book = Book(title="The Hobbit", author="J.R.R. Tolkien")
    # my_book is already in redis
    book_from_redis = await Book.select(ids=["The Hobbit"])
    assert book_from_redis[0] == my_book

    # _auto_sync means that changing a field will automatically save the model
    my_book.author = "J.R.R. Tolkien II"
    book_from_redis = await Book.select(ids=["The Hobbit"])
    assert book_from_redis[0] == my_book

    my_movie = Movie(title="The Lord of the Rings", director="Peter Jackson")
    # my_movie is not in redis until it is inserted
    assert await Movie.select() == []
    await Movie.insert(my_movie)

    my_movie.director = "Peter Jackson II"
    movie_from_redis = await Movie.select(ids=["The Lord of the Rings"])
    assert movie_from_redis[0] == my_movie

    # _auto_sync and _auto_save can be set on a per instance basis
    local_book = Book(
        title="The Silmarillion", author="J.R.R. Tolkien", _auto_save=False, _auto_sync=False
    )
    local_book.author = "someone else"
    books_in_redis = await Book.select()
    assert len(books_in_redis) == 1

    # and every one of those writes is an event
    assert [(e.type, e.path) for e in await my_book.history()] == [
        ("saved", "$"),
        ("set", "$.author"),
    ]


async def test_an_auto_model_saves_and_syncs_by_default(redis):
    song = Song(title="Blackbird")
    song.artist = "The Beatles"
    (stored,) = await Song.select()
    assert stored == song and stored.artist == "The Beatles"


async def test_assignments_reach_redis_in_the_order_they_were_made(redis):
    book = Book(title="Dune", author="a")
    for i in range(30):
        book.pages = i
    (stored,) = await Book.select(ids="Dune")
    assert stored.pages == 29
    assert [e.data["value"] for e in (await book.history())[1:]] == list(range(30))


async def test_a_bad_assignment_raises_at_once_and_writes_nothing(redis):
    book = Book(title="Emma", author="Jane Austen")
    with pytest.raises(FieldTypeError, match="Value must be int"):
        book.pages = "many"
    assert book.pages == 0
    (stored,) = await Book.select()
    assert stored.pages == 0 and len(await book.history()) == 1


async def test_set_auto_save_and_set_auto_sync_change_one_instance(redis):
    book = Book(title="Ulysses", author="Joyce", _auto_save=False)
    book.set_auto_sync(False)
    book.pages = 730
    assert await Book.select() == []
    book.set_auto_sync()
    book.pages = 732  # the first synced assignment saves the record, then sets the field
    (stored,) = await Book.select()
    assert stored.pages == 732
    book.set_auto_save(False)
    assert [e.type for e in await book.history()] == ["saved", "set"]


async def test_an_update_block_writes_its_changes_at_the_end_in_one_atomic_step(redis):
    book = Book(title="Middlemarch", author="George Eliot", pages=800)
    await Book.flush()
    async with book.update():
        book.author = "Mary Ann Evans"
        book.pages = 880
        assert (await Book.select())[0].author == "George Eliot"  # nothing written yet
    (stored,) = await Book.select()
    assert (stored.author, stored.pages) == ("Mary Ann Evans", 880)
    *_, first, second = await book.history()
    assert (first.path, second.path) == ("$.author", "$.pages")
    assert first.ts == second.ts and second.seq == first.seq + 1  # one write


async def test_an_update_block_lands_after_the_instance_s_earlier_synced_writes(redis):
    book = Book(title="Hamlet", author="a")
    book.author = "b"  # a background write, still in flight when the block ends
    async with book.update():
        book.author = "c"
    (stored,) = await Book.select()
    assert stored.author == "c"
    assert [e.data.get("value") for e in await book.history()] == [None, "b", "c"]


async def test_an_update_block_that_raises_writes_nothing_and_restores_the_fields(redis):
    book = Book(title="Beloved", author="Toni Morrison", pages=320)

    async def change_then_fail() -> None:
        async with book.update():
            book.pages = 1
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError, match="changed my mind"):
        await change_then_fail()
    assert book.pages == 320
    (stored,) = await Book.select()
    assert stored.pages == 320 and len(await book.history()) == 1


async def test_the_class_update_of_pydantic_redis_still_works_beside_the_block(redis):
    Book(title="Persuasion", author="Austen")
    await Book.update(_id="Persuasion", data={"pages": 249})
    assert (await Book.select())[0].pages == 249
    with pytest.raises(DocumentNotFoundError):
        await Book.update(_id="missing", data={"pages": 1})


async def test_a_failed_background_write_raises_at_the_next_flush(redis):
    movie = Movie(title="Alien", director="Scott")
    await Movie.insert(movie)
    await redis.delete(movie.key)  # removed behind the model's back
    movie.director = "Ridley Scott"  # the write fails in the background: no such record
    with pytest.raises(DocumentNotFoundError):
        await Movie.flush()
    await Movie.flush()  # reported once
    assert await Movie.select() == []


def test_automatic_saving_needs_a_running_event_loop():
    with pytest.raises(UsageError, match="running event loop"):
        Song(title="Outside")
    song = Song(title="Quiet", _auto_save=False, _auto_sync=False)
    song.artist = "fine without a loop"
    assert song.artist == "fine without a loop"
