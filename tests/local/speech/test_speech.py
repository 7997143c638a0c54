"""Offline speech parts: espeak-ng TTS, pocketsphinx ASR, webrtcvad speech detection (all run for real)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from callbot.local.speech import Speaker, SpeechDetector, VadEvent
from callbot.local.speech.asr import Recognizer, ipa_to_arpabet, normalize_words
from callbot.local.speech.vad import threshold_to_mode

PHRASES = [
    "what are your opening hours",
    "i would like to book a table",
    "goodbye",
    "can i speak to a human please",
    "please cancel my reservation for tomorrow",
    "yes that is correct",
]


@pytest.fixture(scope="module")
def speaker() -> Speaker:
    return Speaker()


@pytest.fixture(scope="module")
def phrase_recognizer() -> Recognizer:
    return Recognizer(PHRASES)


def silence(ms: int, rate: int) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def noise(ms: int, rate: int, sigma: float, seed: int = 7) -> bytes:
    x = np.random.default_rng(seed).normal(0.0, sigma, rate * ms // 1000)
    return np.rint(x).clip(-32768, 32767).astype("<i2").tobytes()


def duration_ms(pcm: bytes, rate: int) -> int:
    return len(pcm) // 2 * 1000 // rate


def feed_in_chunks(detector: SpeechDetector, audio: bytes, chunk: int) -> list[VadEvent]:
    events: list[VadEvent] = []
    for i in range(0, len(audio), chunk):
        events += detector.feed(audio[i : i + chunk])
    return events + detector.finish()


# -- TTS ---------------------------------------------------------------------------------------------


def test_same_text_gives_identical_audio_even_after_other_synthesis(speaker: Speaker) -> None:
    first = speaker.synthesize("what are your opening hours")
    speaker.synthesize("something entirely different, to move espeak's internal state on")
    assert Speaker().synthesize("what are your opening hours") == first


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_synthesis_is_speech_sized_pcm_at_the_requested_rate(speaker: Speaker, rate: int) -> None:
    pcm = speaker.synthesize("i would like to book a table", rate)
    native = speaker.synthesize("i would like to book a table", 22050)
    assert len(pcm) % 2 == 0
    assert abs(len(pcm) // 2 - round(len(native) // 2 * rate / 22050)) <= 1
    assert 1000 < duration_ms(pcm, rate) < 4000
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) > 500  # clearly audible, not silence


def test_speaking_rate_and_voice_are_applied() -> None:
    text = "please cancel my reservation for tomorrow"
    slow = Speaker(rate_wpm=120).synthesize(text)
    fast = Speaker(rate_wpm=260).synthesize(text)
    assert len(slow) > 1.5 * len(fast)
    assert Speaker(voice="en").synthesize(text) != Speaker(voice="en-us+f3").synthesize(text)


def test_unknown_voice_and_bad_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="voice"):
        Speaker(voice="xx-nonexistent").synthesize("hello")
    with pytest.raises(ValueError):
        Speaker(rate_wpm=10)
    with pytest.raises(ValueError):
        Speaker(pitch=150)


def test_empty_text_gives_no_audio(speaker: Speaker) -> None:
    assert speaker.synthesize("") == b""
    assert speaker.synthesize("  \n ") == b""


async def test_concurrent_async_synthesis_is_serialised_and_identical(speaker: Speaker) -> None:
    expected = speaker.synthesize("goodbye", 16000)
    results = await asyncio.gather(*(speaker.synthesize_async("goodbye", 16000) for _ in range(4)))
    assert all(r == expected for r in results)


# -- ASR ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("phrase", PHRASES)
def test_phrase_model_transcribes_tts_phrases_exactly(
    speaker: Speaker, phrase_recognizer: Recognizer, phrase: str
) -> None:
    assert phrase_recognizer.transcribe(speaker.synthesize(phrase, 24000), 24000) == phrase


def test_phrase_model_handles_telephone_rate_and_reordered_words(
    speaker: Speaker, phrase_recognizer: Recognizer
) -> None:
    assert phrase_recognizer.transcribe(speaker.synthesize("goodbye", 8000), 8000) == "goodbye"
    reordered = "i would like to cancel my table"
    assert phrase_recognizer.transcribe(speaker.synthesize(reordered, 16000), 16000) == reordered


def test_phrases_are_normalised_and_unknown_words_get_a_pronunciation(speaker: Speaker) -> None:
    recognizer = Recognizer(["Welcome to Contoso!", "Your order number is 42."])
    assert recognizer.vocabulary is not None
    assert {"contoso", "42", "welcome"} <= recognizer.vocabulary
    audio = speaker.synthesize("welcome to contoso", 16000)
    assert recognizer.transcribe(audio, 16000) == "welcome to contoso"


def test_phrases_without_any_word_are_rejected() -> None:
    with pytest.raises(ValueError):
        Recognizer(["!!!", "   ", "?"])


def test_silence_and_empty_audio_transcribe_to_nothing(phrase_recognizer: Recognizer) -> None:
    assert phrase_recognizer.transcribe(b"", 16000) == ""
    assert phrase_recognizer.transcribe(silence(1000, 16000), 16000) == ""


async def test_async_construction_and_transcription(speaker: Speaker) -> None:
    recognizer = await Recognizer.create(["yes please", "no thank you"])
    audio = await speaker.synthesize_async("no thank you", 24000)
    assert await recognizer.transcribe_async(audio, 24000) == "no thank you"


def test_generic_model_recognises_clear_tts_speech(speaker: Speaker) -> None:
    text = Recognizer().transcribe(speaker.synthesize("what are your opening hours", 16000), 16000)
    assert "opening hours" in text


def test_text_helpers() -> None:
    assert normalize_words("I'd like THAT, please… ’twas") == ["i'd", "like", "that", "please", "twas"]
    assert ipa_to_arpabet("kəntˈoʊsoʊ") == "K AH N T OW S OW"
    assert ipa_to_arpabet("tʃˈɜːtʃ") == "CH ER CH"


# -- VAD ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_speech_start_and_stop_are_placed_on_the_audio_timeline(speaker: Speaker, rate: int) -> None:
    speech = speaker.synthesize("i would like to book a table", rate)
    onset, end = 1000, 1000 + duration_ms(speech, rate)
    audio = silence(1000, rate) + speech + silence(1500, rate)
    detector = SpeechDetector(rate, prefix_padding_ms=300, silence_duration_ms=500)
    events: list[tuple[int, VadEvent]] = []
    step = rate * 20 // 1000 * 2
    for i in range(0, len(audio), step):
        events += [(detector.position_ms, e) for e in detector.feed(audio[i : i + step])]
    assert [e.kind for _, e in events] == ["speech_started", "speech_stopped"]
    (_, started), (stopped_at, stopped) = events
    assert abs(started.audio_ms + 300 - onset) <= 200
    assert end - 100 <= stopped.audio_ms <= end + 250  # webrtcvad's hangover lags the true end a little
    assert stopped_at - stopped.audio_ms == 500  # reported once the configured silence has passed
    assert stopped.audio is not None
    assert duration_ms(stopped.audio, rate) == stopped_at - started.audio_ms


def test_segment_audio_is_what_the_recogniser_needs(speaker: Speaker, phrase_recognizer: Recognizer) -> None:
    rate = 24000
    audio = silence(700, rate) + speaker.synthesize("can i speak to a human please", rate) + silence(900, rate)
    events = SpeechDetector(rate).feed(audio)
    assert events[-1].audio is not None
    assert phrase_recognizer.transcribe(events[-1].audio, rate) == "can i speak to a human please"


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_no_events_on_silence_or_low_level_noise(rate: int) -> None:
    for audio in (silence(5000, rate), noise(5000, rate, sigma=100.0)):  # noise at about -50 dBFS
        detector = SpeechDetector(rate)
        assert detector.feed(audio) + detector.finish() == []


@pytest.mark.parametrize("rate", [16000, 24000])
def test_events_do_not_depend_on_chunking(speaker: Speaker, rate: int) -> None:
    audio = (
        noise(600, rate, 50.0)
        + speaker.synthesize("what are your opening hours", rate)
        + noise(800, rate, 50.0, seed=8)
        + speaker.synthesize("goodbye", rate)
        + silence(300, rate)
    )
    frame = rate * 20 // 1000 * 2
    reference = feed_in_chunks(SpeechDetector(rate), audio, frame)
    assert [e.kind for e in reference] == ["speech_started", "speech_stopped"] * 2
    for chunk in (7, 333, frame * 17 + 2, len(audio)):
        assert feed_in_chunks(SpeechDetector(rate), audio, chunk) == reference


def test_speech_in_the_first_300_ms_is_ignored(speaker: Speaker) -> None:
    rate = 16000
    burst = speaker.synthesize("what are your opening hours", rate)[: rate * 2 * 280 // 1000]
    audio = burst + silence(1500, rate)
    assert SpeechDetector(rate).feed(audio) == []
    assert [e.kind for e in SpeechDetector(rate, ignore_initial_ms=0).feed(audio)] == [
        "speech_started",
        "speech_stopped",
    ]


def test_long_speech_is_cut_into_bounded_segments(speaker: Speaker) -> None:
    rate = 16000
    speech = speaker.synthesize("please cancel my reservation for tomorrow and book a table", rate)
    detector = SpeechDetector(rate, max_segment_ms=1000)
    events = detector.feed(silence(500, rate) + speech) + detector.finish()
    assert len(events) >= 4
    for event in events:
        if event.kind == "speech_stopped":
            assert event.audio is not None and duration_ms(event.audio, rate) <= 1000


def test_finish_closes_an_open_segment(speaker: Speaker) -> None:
    detector = SpeechDetector(16000)
    started = detector.feed(silence(500, 16000) + speaker.synthesize("yes that is correct", 16000))
    assert [e.kind for e in started] == ["speech_started"] and detector.in_speech
    (stopped,) = detector.finish()
    assert stopped.kind == "speech_stopped" and stopped.audio
    assert detector.finish() == []


def test_settings_are_validated() -> None:
    assert [threshold_to_mode(t) for t in (0.0, 0.3, 0.5, 0.8, 1.0)] == [0, 1, 2, 3, 3]
    with pytest.raises(ValueError):
        SpeechDetector(44100)
    with pytest.raises(ValueError):
        SpeechDetector(16000, threshold=1.5)
    with pytest.raises(ValueError):
        SpeechDetector(16000, silence_duration_ms=-1)
