"""Reference solution of the budget tracker project (never shown to learners).

Kept beside the brief so the companion's output guard can recognise it, renamed or not.
"""
import csv
import sys
from datetime import datetime
from pathlib import Path

FIELDS = ["date", "category", "description", "amount"]


def parse_amount(text):
    """Turn '12,50' or '-3.4' into a float; raise ValueError on anything else."""
    cleaned = text.strip().replace(",", ".")
    if not cleaned:
        raise ValueError("the amount is empty")
    return round(float(cleaned), 2)


def parse_date(text):
    """Check a YYYY-MM-DD date and return it unchanged."""
    datetime.strptime(text.strip(), "%Y-%m-%d")
    return text.strip()


def load_transactions(path):
    """Read every valid row of the CSV file; report and skip malformed lines."""
    transactions = []
    file = Path(path)
    if not file.exists():
        file.write_text(",".join(FIELDS) + "\n", encoding="utf-8")
        return transactions
    with file.open(newline="", encoding="utf-8") as handle:
        for line_number, row in enumerate(csv.DictReader(handle), start=2):
            try:
                row["amount"] = parse_amount(row["amount"])
                row["date"] = parse_date(row["date"])
            except (ValueError, KeyError, AttributeError) as error:
                print(f"line {line_number} skipped: {error}", file=sys.stderr)
                continue
            transactions.append(row)
    return transactions


def save_transaction(path, transaction):
    """Append one transaction to the CSV file."""
    with Path(path).open("a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=FIELDS).writerow(transaction)


def monthly_summary(transactions, month):
    """Totals per category, income, expenses and balance for one YYYY-MM month."""
    per_category = {}
    income = 0.0
    expenses = 0.0
    for tx in transactions:
        if not tx["date"].startswith(month):
            continue
        amount = tx["amount"]
        per_category[tx["category"]] = per_category.get(tx["category"], 0.0) + amount
        if amount >= 0:
            income += amount
        else:
            expenses += amount
    return {
        "categories": dict(sorted(per_category.items())),
        "income": round(income, 2),
        "expenses": round(expenses, 2),
        "balance": round(income + expenses, 2),
    }


def format_summary(summary):
    """The summary as aligned text columns."""
    lines = [f"{name:<15}{total:>10.2f}" for name, total in summary["categories"].items()]
    lines.append(f"{'income':<15}{summary['income']:>10.2f}")
    lines.append(f"{'expenses':<15}{summary['expenses']:>10.2f}")
    lines.append(f"{'balance':<15}{summary['balance']:>10.2f}")
    return "\n".join(lines)


def main():
    path = "transactions.csv"
    while True:
        choice = input("1) add  2) list  3) summary  4) categories  q) quit: ").strip()
        if choice == "q":
            return
        transactions = load_transactions(path)
        if choice == "1":
            try:
                transaction = {
                    "date": parse_date(input("date: ")),
                    "category": input("category: ").strip() or None,
                    "description": input("description: ").strip(),
                    "amount": parse_amount(input("amount: ")),
                }
            except ValueError as error:
                print(f"not added: {error}")
                continue
            if transaction["category"] is None:
                print("not added: the category is empty")
                continue
            save_transaction(path, transaction)
        elif choice == "2":
            for tx in transactions:
                print(tx["date"], tx["category"], tx["description"], tx["amount"])
        elif choice == "3":
            print(format_summary(monthly_summary(transactions, input("month (YYYY-MM): "))))
        elif choice == "4":
            print(", ".join(sorted({tx["category"] for tx in transactions})))
        else:
            print(f"unknown choice {choice!r}")


if __name__ == "__main__":
    main()
