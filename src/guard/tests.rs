use super::*;

const SOLUTION: &str = r#"def monthly_totals(transactions):
    totals = {}
    for tx in transactions:
        month = tx["date"][:7]
        totals[month] = totals.get(month, 0) + tx["amount"]
    return dict(sorted(totals.items()))
"#;

fn rules(locale: &str) -> TurnRules {
    TurnRules {
        references: Arc::new(vec![Arc::new(Reference::new(
            "tracker.solution/budget.py",
            SOLUTION,
        ))]),
        max_code_lines: Some(15),
        forbidden: vec!["answer_key".into()],
        n_passages: 2,
        locale: locale.into(),
        shown_before: Vec::new(),
        learner_text: Vec::new(),
        course_code: None,
        pass_unfenced: false,
    }
}

fn stream(guard: &mut OutputGuard, text: &str, step: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    for chunk in chars.chunks(step) {
        out.push_str(&guard.push(&chunk.iter().collect::<String>()));
    }
    out + &guard.finish()
}

#[test]
fn a_disguised_copy_of_the_solution_never_reaches_the_learner() {
    let answer = "Sure [1]:\n\n```python\n# grouped by month\ndef group(rows):\n    out = {}\n    for r in rows:\n        k = r['d'][:7]\n        out[k] = out.get(k, 0) + r['a']\n    return dict(sorted(out.items()))\n```\nHope it helps.";
    for step in [1, 5, 64] {
        let mut guard = OutputGuard::new(rules("en"));
        let out = stream(&mut guard, answer, step);
        assert!(!out.contains("def group"), "{out}");
        assert!(
            out.starts_with("Sure [1]:") && out.ends_with("Hope it helps."),
            "{out}"
        );
        assert!(out.contains("graded project"));
        let report = guard.report();
        assert_eq!(report.withheld.len(), 1);
        assert_eq!(report.withheld[0].rule, Rule::Solution);
        assert!(report.withheld[0].original.contains("def group(rows):"));
    }
}

#[test]
fn a_small_generic_example_passes() {
    let answer = "A loop over a dict [2]:\n\n```python\nfor name, score in scores.items():\n    print(name, score)\n```\n";
    let mut guard = OutputGuard::new(rules("en"));
    assert_eq!(stream(&mut guard, answer, 3), answer);
    let report = guard.report();
    assert!(report.withheld.is_empty() && !report.uncited && !report.changed_answer());
    assert_eq!(report.blocks_checked, 1);
}

#[test]
fn a_solution_cut_across_turns_is_stopped_before_half_of_it_is_shown() {
    let lines: Vec<&str> = SOLUTION.lines().collect();
    let mut shown: Vec<String> = Vec::new();
    let mut withheld = 0;
    for pair in lines.chunks(2) {
        let block = pair.join("\n") + "\n";
        let mut turn = rules("en");
        turn.shown_before = shown.clone();
        let mut guard = OutputGuard::new(turn);
        let out = stream(
            &mut guard,
            &format!("Next part:\n```python\n{block}```\n"),
            7,
        );
        if guard.report().withheld.is_empty() {
            shown.extend(code_blocks(&out));
        } else {
            withheld += 1;
        }
    }
    assert!(withheld >= 1);
    let reference = Reference::new("s", SOLUTION);
    let mut seen = vec![false; reference.n_tokens()];
    for code in &shown {
        for (s, c) in seen.iter_mut().zip(reference.overlap(code).covered) {
            *s |= c;
        }
    }
    let share = seen.iter().filter(|s| **s).count() as f32 / reference.n_tokens() as f32;
    assert!(
        share <= MAX_SHOWN_SHARE,
        "the learner saw {share} of the solution"
    );
}

#[test]
fn an_invalid_citation_is_stripped_and_an_uncited_answer_is_marked() {
    let mut guard = OutputGuard::new(rules("en"));
    assert_eq!(
        stream(&mut guard, "Loops repeat [1], see [7].", 2),
        "Loops repeat [1], see."
    );
    assert_eq!(guard.report().citations_removed, vec![7]);
    let mut guard = OutputGuard::new(rules("en"));
    stream(&mut guard, "No citation at all.", 4);
    assert!(guard.report().uncited);
}

#[test]
fn a_french_learner_gets_the_coaching_note_in_french() {
    let mut guard = OutputGuard::new(rules("fr-FR"));
    let out = stream(&mut guard, &format!("```python\n{SOLUTION}```\n"), 9);
    assert!(out.contains("projet noté"), "{out}");
}

#[test]
fn code_longer_than_the_policy_allows_or_with_a_forbidden_word_is_withheld() {
    let long: String = (0..20).map(|i| format!("x{i} = {i}\n")).collect();
    let mut guard = OutputGuard::new(rules("en"));
    stream(&mut guard, &format!("```\n{long}```\n"), 11);
    assert_eq!(guard.report().withheld[0].rule, Rule::Length);
    let mut guard = OutputGuard::new(rules("en"));
    let out = stream(
        &mut guard,
        "```\nprint(answer_key)\n```\nthe answer_key is",
        3,
    );
    assert_eq!(guard.report().withheld[0].rule, Rule::Forbidden);
    assert!(out.ends_with("the … is"), "{out}");
}

#[test]
fn a_block_the_stream_never_closes_is_still_checked() {
    let mut guard = OutputGuard::new(rules("en"));
    let out = stream(&mut guard, &format!("Here:\n```python\n{SOLUTION}"), 13);
    assert!(!out.contains("monthly_totals"));
    assert_eq!(guard.report().withheld.len(), 1);
}

#[test]
fn prose_is_not_held_while_code_is() {
    let mut guard = OutputGuard::new(rules("en"));
    assert_eq!(guard.push("Start with this "), "Start with this");
    assert_eq!(guard.push("step.\n```py\nx = 1\n"), " step.\n");
    assert!(guard.is_holding_code());
    assert_eq!(guard.push("```\n"), "```py\nx = 1\n```\n");
    assert!(!guard.is_holding_code());
}

#[test]
fn the_learners_own_code_quoted_back_passes_even_when_it_resembles_the_solution() {
    let mut turn = rules("en");
    turn.learner_text = vec![format!("Why does this fail?\n{SOLUTION}")];
    let mut guard = OutputGuard::new(turn);
    let answer = format!("Look at your loop:\n```python\n{SOLUTION}```\n");
    assert_eq!(stream(&mut guard, &answer, 5), answer);
    assert!(guard.report().withheld.is_empty());
}

#[test]
fn the_courses_coaching_note_stands_where_the_block_was_every_line_quoted() {
    let mut notes = CoachingNotes::default();
    notes.set(
        Rule::Solution,
        "Not the solution.\n\nTry the first step.".into(),
    );
    notes.set(Rule::Forbidden, "   ".into());
    let mut guard = OutputGuard::new(rules("en")).with_coaching(notes);
    let out = stream(
        &mut guard,
        &format!("Here:\n```python\n{SOLUTION}```\nBye."),
        6,
    );
    assert_eq!(
        out,
        "Here:\n\n> Not the solution.\n>\n> Try the first step.\n\nBye."
    );
    // A rule the course's note says nothing for gets the guard's own.
    let mut notes = CoachingNotes::default();
    notes.set(Rule::Forbidden, "   ".into());
    let mut guard = OutputGuard::new(rules("fr")).with_coaching(notes);
    let out = stream(&mut guard, "```\nprint(answer_key)\n```\n", 4);
    assert_eq!(out, coaching_note(Rule::Forbidden, "fr"));
    assert!(out.contains("ton cours"), "{out}");
}

#[test]
fn an_unfenced_or_indented_copy_of_the_solution_never_reaches_the_learner() {
    let indented: String = SOLUTION.lines().map(|l| format!("    {l}\n")).collect();
    for code in [SOLUTION.to_string(), indented] {
        let answer = format!("Sure, here it is:\n\n{code}\nHope it helps.");
        for step in [1, 5, 64] {
            let mut guard = OutputGuard::new(rules("en"));
            let out = stream(&mut guard, &answer, step);
            assert!(
                !out.contains("monthly_totals") && !out.contains("totals.get"),
                "{out}"
            );
            assert!(
                out.starts_with("Sure, here it is:") && out.ends_with("Hope it helps."),
                "{out}"
            );
            let report = guard.report();
            assert_eq!(report.withheld.len(), 1, "{report:?}");
            assert_eq!(report.withheld[0].rule, Rule::Solution);
            assert_eq!(report.unfenced_checked, 1);
            assert!(report.withheld[0].original.contains("def monthly_totals"));
        }
    }
}

#[test]
fn a_small_unfenced_example_and_plain_prose_pass_unchanged() {
    let answer = "A loop over a dict keeps going until the items run out [1]:\n\nfor name, score in scores.items():\n    print(name, score)\n\n- Each `name` is a key.\n- Try it with your own dict.\n\n# Next step\nWhat do you think it prints?";
    for step in [1, 3, 64] {
        let mut guard = OutputGuard::new(rules("en"));
        assert_eq!(stream(&mut guard, answer, step), answer);
        let report = guard.report();
        assert!(!report.changed_answer(), "{report:?}");
        assert_eq!(report.unfenced_checked, 1, "{report:?}");
    }
}

#[test]
fn a_policy_that_passes_unfenced_code_lets_it_through_as_prose() {
    let mut turn = rules("en");
    turn.pass_unfenced = true;
    let mut guard = OutputGuard::new(turn);
    let answer = format!("Sure:\n\n{SOLUTION}\nBye.");
    assert_eq!(stream(&mut guard, &answer, 7), answer);
    assert_eq!(guard.report().blocks_checked, 0);
}
